//! The testpmd `flow` grammar never panics, and whatever it accepts prints
//! back to a line that parses to the same command.
#![no_main]

use libfuzzer_sys::fuzz_target;
use offload::{parse_flow, FlowCommand};

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else { return };
    if let Ok(FlowCommand::Create(spec)) = parse_flow(line) {
        let again = parse_flow(&spec.to_string()).expect("a printed rule parses");
        assert_eq!(again, FlowCommand::Create(spec));
    }
});
