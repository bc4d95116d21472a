//! bulkhead: the command-line entry point.
#![forbid(unsafe_code)]

mod shell;

fn main() {
    println!("bulkhead: under construction");
}
