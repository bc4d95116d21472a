//! Longest-prefix-match map over the 16-byte key address space: the data path's
//! IP -> security identity map (and any other per-prefix value).
//!
//! One hash table per prefix length in use; a lookup probes the lengths in use,
//! longest first. Typical identity maps use a handful of lengths (/32 and /128
//! for workloads, a few CIDR lengths for ipBlocks), so a lookup is a few probes.
//! Updates are O(1) (plus O(lengths) when a length comes into or out of use).

use crate::key::Addr;
use crate::rule::Prefix;
use std::collections::HashMap;

/// A longest-prefix-match map.
#[derive(Clone, Debug)]
pub struct PrefixMap<V> {
    /// Indexed by prefix length 0..=128.
    tables: Vec<HashMap<Addr, V>>,
    /// Lengths with at least one entry, longest first.
    lens: Vec<u8>,
}

impl<V> Default for PrefixMap<V> {
    fn default() -> Self {
        Self { tables: (0..=128).map(|_| HashMap::new()).collect(), lens: Vec::new() }
    }
}

impl<V> PrefixMap<V> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts or replaces the value for `p`, returning the old one.
    pub fn insert(&mut self, p: Prefix, v: V) -> Option<V> {
        let p = Prefix::new(p.addr, p.len);
        let t = &mut self.tables[p.len as usize];
        if t.is_empty() {
            let at = self.lens.iter().position(|&l| l < p.len).unwrap_or(self.lens.len());
            self.lens.insert(at, p.len);
        }
        t.insert(p.addr, v)
    }

    /// Removes the entry for exactly `p`.
    pub fn remove(&mut self, p: Prefix) -> Option<V> {
        let p = Prefix::new(p.addr, p.len);
        let t = &mut self.tables[p.len as usize];
        let old = t.remove(&{ p.addr });
        if old.is_some() && t.is_empty() {
            self.lens.retain(|&l| l != p.len);
        }
        old
    }

    /// The value of exactly `p`.
    pub fn get(&self, p: Prefix) -> Option<&V> {
        let p = Prefix::new(p.addr, p.len);
        self.tables[p.len as usize].get(&{ p.addr })
    }

    /// The value of the longest prefix containing `a`, with that prefix.
    #[inline]
    pub fn lookup(&self, a: Addr) -> Option<(Prefix, &V)> {
        for &len in &self.lens {
            let p = Prefix::new(a, len);
            if let Some(v) = self.tables[len as usize].get(&{ p.addr }) {
                return Some((p, v));
            }
        }
        None
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.lens.iter().map(|&l| self.tables[l as usize].len()).sum()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// All entries (prefix, value), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (Prefix, &V)> + '_ {
        self.lens.iter().flat_map(move |&len| {
            self.tables[len as usize].iter().map(move |(a, v)| (Prefix { addr: *a, len }, v))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::v4_mapped;

    #[test]
    fn longest_prefix_wins_and_removal_falls_back() {
        let mut m = PrefixMap::new();
        m.insert(Prefix::v4(0x0a00_0000, 8), 1u32);
        m.insert(Prefix::v4(0x0a01_0000, 16), 2);
        m.insert(Prefix::v4(0x0a01_0203, 32), 3);
        m.insert(Prefix::ANY, 9);
        assert_eq!(m.lookup(v4_mapped(0x0a01_0203)).map(|(_, v)| *v), Some(3));
        assert_eq!(m.lookup(v4_mapped(0x0a01_0204)).map(|(_, v)| *v), Some(2));
        assert_eq!(m.lookup(v4_mapped(0x0a02_0000)).map(|(_, v)| *v), Some(1));
        assert_eq!(m.lookup(1).map(|(_, v)| *v), Some(9)); // ::1 falls to ::/0
        assert_eq!(m.remove(Prefix::v4(0x0a01_0203, 32)), Some(3));
        assert_eq!(m.lookup(v4_mapped(0x0a01_0203)).map(|(_, v)| *v), Some(2));
        assert_eq!(m.len(), 3);
        assert_eq!(m.remove(Prefix::v4(0x0a01_0203, 32)), None);
    }
}
