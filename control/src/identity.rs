//! Security identities: a number per (namespace, label set), shared by every
//! workload with that label set, with reserved numbers for non-workload peers.

use crate::labels::Labels;
use std::collections::HashMap;

/// Not resolved (the parser's default).
pub const UNKNOWN: u32 = 0;
/// This host.
pub const HOST: u32 = 1;
/// Any address outside the model (the Internet, other hosts).
pub const WORLD: u32 = 2;
/// First identity handed to workloads.
pub const FIRST_DYNAMIC: u32 = 256;

/// The name of a reserved identity.
pub fn reserved_name(id: u32) -> Option<&'static str> {
    match id {
        UNKNOWN => Some("unknown"),
        HOST => Some("host"),
        WORLD => Some("world"),
        _ => None,
    }
}

/// What an identity stands for.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct IdentityKey {
    /// Namespace of the workloads.
    pub namespace: String,
    /// Their labels.
    pub labels: Labels,
}

#[derive(Clone, Debug)]
struct Entry {
    key: IdentityKey,
    refs: usize,
}

/// Allocates identities: the same key gets the same number while anything holds it.
#[derive(Clone, Debug)]
pub struct IdentityAllocator {
    by_key: HashMap<IdentityKey, u32>,
    by_id: HashMap<u32, Entry>,
    next: u32,
    free: Vec<u32>,
    /// Numbers fixed by the cluster datastore: a key here always gets its
    /// number, and fresh local numbers skip every pinned one.
    pinned: HashMap<IdentityKey, u32>,
    pinned_ids: std::collections::HashSet<u32>,
}

impl Default for IdentityAllocator {
    fn default() -> Self {
        Self {
            by_key: HashMap::new(),
            by_id: HashMap::new(),
            next: FIRST_DYNAMIC,
            free: Vec::new(),
            pinned: HashMap::new(),
            pinned_ids: Default::default(),
        }
    }
}

impl IdentityAllocator {
    /// Takes a reference on the identity of `key`, allocating it if needed.
    /// Returns the identity and whether it is new.
    pub fn acquire(&mut self, key: &IdentityKey) -> Option<(u32, bool)> {
        if let Some(&id) = self.by_key.get(key) {
            if let Some(e) = self.by_id.get_mut(&id) {
                e.refs += 1;
            }
            return Some((id, false));
        }
        let pinned = self.pinned.get(key).copied().filter(|id| !self.by_id.contains_key(id));
        let id = match pinned {
            Some(id) => id,
            None => self.fresh()?,
        };
        self.by_key.insert(key.clone(), id);
        self.by_id.insert(
            id,
            Entry {
                key: key.clone(),
                refs: 1,
            },
        );
        Some((id, true))
    }

    /// A number no live or pinned identity uses. Fresh numbers first, so a
    /// released number is not reused while stale flow state may still carry
    /// it; recycle only when the space runs out.
    fn fresh(&mut self) -> Option<u32> {
        while self.next < u32::MAX {
            self.next += 1;
            let id = self.next - 1;
            if !self.pinned_ids.contains(&id) && !self.by_id.contains_key(&id) {
                return Some(id);
            }
        }
        while let Some(id) = self.free.pop() {
            if !self.pinned_ids.contains(&id) && !self.by_id.contains_key(&id) {
                return Some(id);
            }
        }
        None
    }

    /// Fixes the numbers of `keys` (cluster-wide identities from the
    /// datastore). Takes effect for keys acquired from now on; a live
    /// identity keeps its number until its last reference goes.
    pub fn pin(&mut self, keys: impl IntoIterator<Item = (IdentityKey, u32)>) {
        for (k, id) in keys {
            self.pinned_ids.insert(id);
            self.pinned.insert(k, id);
        }
    }

    /// True when the live identity of `key` differs from its pinned number.
    pub fn differs_from_pin(&self, key: &IdentityKey) -> bool {
        match (self.by_key.get(key), self.pinned.get(key)) {
            (Some(a), Some(b)) => a != b,
            _ => false,
        }
    }

    /// Drops a reference; returns true when the identity was released.
    pub fn release(&mut self, id: u32) -> bool {
        let Some(e) = self.by_id.get_mut(&id) else {
            return false;
        };
        e.refs -= 1;
        if e.refs > 0 {
            return false;
        }
        let e = self.by_id.remove(&id).expect("present");
        self.by_key.remove(&e.key);
        self.free.push(id);
        true
    }

    /// What `id` stands for.
    pub fn key(&self, id: u32) -> Option<&IdentityKey> {
        self.by_id.get(&id).map(|e| &e.key)
    }

    /// The identity of `key`, if allocated.
    pub fn get(&self, key: &IdentityKey) -> Option<u32> {
        self.by_key.get(key).copied()
    }

    /// Number of live identities.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True when none is allocated.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// All live identities.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &IdentityKey)> + '_ {
        self.by_id.iter().map(|(id, e)| (*id, &e.key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_labels_share_and_release_on_last_ref() {
        let mut a = IdentityAllocator::default();
        let k = IdentityKey {
            namespace: "x".into(),
            labels: [("app".to_string(), "web".to_string())].into(),
        };
        let (i1, new1) = a.acquire(&k).unwrap();
        let (i2, new2) = a.acquire(&k).unwrap();
        assert_eq!((i1, new1, new2), (i2, true, false));
        assert!(i1 >= FIRST_DYNAMIC);
        assert!(!a.release(i1));
        assert!(a.release(i1));
        assert!(a.key(i1).is_none());
        let (i3, new3) = a.acquire(&k).unwrap();
        assert!(new3);
        assert_ne!(i3, i1, "a released number is not reused at once");
    }

    #[test]
    fn pinned_numbers_win_and_fresh_ones_skip_them() {
        let mut a = IdentityAllocator::default();
        let k = |v: &str| IdentityKey { namespace: "x".into(), labels: [("app".to_string(), v.to_string())].into() };
        a.pin([(k("db"), FIRST_DYNAMIC), (k("web"), 9000)]);
        let (w, _) = a.acquire(&k("web")).unwrap();
        assert_eq!(w, 9000);
        let (other, _) = a.acquire(&k("api")).unwrap();
        assert_eq!(other, FIRST_DYNAMIC + 1, "the pinned FIRST_DYNAMIC is skipped");
        let (d, _) = a.acquire(&k("db")).unwrap();
        assert_eq!(d, FIRST_DYNAMIC);
    }
}
