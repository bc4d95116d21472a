//! The interactive front end: line editing, history and tab completion
//! (rustyline), plus `--cmdline-file` replay, over any [`Target`].

use super::command::{self, candidates};
use super::socket::Target;
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};
use std::io::{BufRead, Write};
use std::path::Path;

/// Completion from the shell grammar.
#[derive(Debug, Default)]
pub struct GrammarHelper;

impl Completer for GrammarHelper {
    type Candidate = Pair;
    fn complete(&self, line: &str, pos: usize, _: &Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        let head = &line[..pos];
        let start = head.rfind(char::is_whitespace).map_or(0, |i| i + 1);
        let done: Vec<&str> = head[..start].split_whitespace().collect();
        let partial = &head[start..];
        let pairs = candidates(&done, partial)
            .into_iter()
            .map(|w| Pair { display: w.clone(), replacement: format!("{w} ") })
            .collect();
        Ok((start, pairs))
    }
}
impl Hinter for GrammarHelper {
    type Hint = String;
}
impl Highlighter for GrammarHelper {}
impl Validator for GrammarHelper {}
impl Helper for GrammarHelper {}

/// What a line did.
enum Step {
    Continue,
    Quit,
}

/// Parses and runs one line, printing its output. Errors are printed, and
/// counted in `errors`.
fn run_line(target: &mut dyn Target, line: &str, out: &mut dyn Write, errors: &mut usize) -> Step {
    match command::parse(line) {
        Ok(None) => Step::Continue,
        Ok(Some(command::Command::Quit)) => Step::Quit,
        Ok(Some(command::Command::Help)) => {
            let _ = write!(out, "{}", command::help_text());
            Step::Continue
        }
        Ok(Some(_)) => {
            match target.execute(line) {
                Ok(s) => {
                    let _ = write!(out, "{s}");
                    if !s.is_empty() && !s.ends_with('\n') {
                        let _ = writeln!(out);
                    }
                }
                Err(e) => {
                    *errors += 1;
                    let _ = writeln!(out, "error: {e}");
                }
            }
            Step::Continue
        }
        Err(e) => {
            *errors += 1;
            let _ = writeln!(out, "{e}");
            Step::Continue
        }
    }
}

/// Runs every line of `file` (echoed after the prompt, like testpmd). Returns
/// the number of failed lines, or `None` if a `quit` ended the session.
pub fn run_file(target: &mut dyn Target, file: &Path, out: &mut dyn Write) -> std::io::Result<Option<usize>> {
    let f = std::fs::File::open(file)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", file.display())))?;
    let mut errors = 0;
    for line in std::io::BufReader::new(f).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        writeln!(out, "bulkhead> {line}")?;
        if let Step::Quit = run_line(target, &line, out, &mut errors) {
            return Ok(None);
        }
    }
    Ok(Some(errors))
}

/// The interactive loop, until `quit`, Ctrl-D or end of input. History is kept
/// in `$HOME/.bulkhead_history`. Returns the number of failed lines.
pub fn interactive(target: &mut dyn Target) -> usize {
    let mut out = std::io::stdout();
    let mut errors = 0;
    let Ok(mut ed) = Editor::<GrammarHelper, rustyline::history::DefaultHistory>::new() else {
        // No terminal features (e.g. stdin is a pipe): plain line reading.
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if let Step::Quit = run_line(target, &line, &mut out, &mut errors) {
                break;
            }
        }
        return errors;
    };
    ed.set_helper(Some(GrammarHelper));
    let hist = std::env::var_os("HOME").map(|h| Path::new(&h).join(".bulkhead_history"));
    if let Some(h) = &hist {
        let _ = ed.load_history(h);
    }
    loop {
        match ed.readline("bulkhead> ") {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = ed.add_history_entry(line.as_str());
                }
                if let Step::Quit = run_line(target, &line, &mut out, &mut errors) {
                    break;
                }
            }
            Err(ReadlineError::Interrupted) => continue,
            Err(_) => break,
        }
    }
    if let Some(h) = &hist {
        let _ = ed.save_history(h);
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Rec(Vec<String>);
    impl Target for Rec {
        fn execute(&mut self, line: &str) -> Result<String, String> {
            self.0.push(line.trim().to_string());
            Ok("ok".into())
        }
    }

    #[test]
    fn cmdline_file_runs_lines_counts_errors_and_stops_at_quit() {
        let p = std::env::temp_dir().join(format!("bh-cmdline-{}.txt", std::process::id()));
        std::fs::write(&p, "set fwd mac\n\nbogus words\nhelp\nstart\nquit\nstop\n").unwrap();
        let mut t = Rec(vec![]);
        let mut out = Vec::new();
        let r = run_file(&mut t, &p, &mut out).unwrap();
        assert_eq!(r, None, "quit ends the file");
        assert_eq!(t.0, vec!["set fwd mac", "start"]);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("bulkhead> bogus words\nBad command"), "{text}");
        assert!(text.contains("show port stats <port>"), "help was printed: {text}");
        std::fs::write(&p, "bogus\nstart\n").unwrap();
        let mut t = Rec(vec![]);
        assert_eq!(run_file(&mut t, &p, &mut Vec::new()).unwrap(), Some(1));
        let _ = std::fs::remove_file(&p);
    }
}
