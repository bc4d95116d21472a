//! The testpmd-style shell: grammar ([`command`]), the control socket that
//! connects it to a running switch ([`socket`]), and the interactive front end
//! ([`repl`]).

pub mod command;
pub mod repl;
pub mod socket;
pub mod switch_target;

pub use socket::{Client, ControlServer, DEFAULT_SOCKET};
pub use switch_target::SwitchTarget;
