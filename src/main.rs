//! bulkhead: the command-line entry point.
#![forbid(unsafe_code)]

mod shell;
mod visibility;

fn main() {
    println!("bulkhead: under construction");
}
