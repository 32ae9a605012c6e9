//! What a command hands back: one JSON object for `--json`, and the same facts as text
//! for a person, so every command answers both ways from one place.

use std::process::ExitCode;

use serde_json::Value;

/// The outcome of one command.
#[derive(Debug)]
pub struct Report {
    /// Printed alone on stdout with `--json`; always has `"ok"`.
    json: Value,
    /// Printed on stdout without `--json`.
    text: String,
    /// Printed on stderr without `--json` (notes and refusals meant for a person).
    note: String,
    /// Whether the command refused (exit 1).
    refused: bool,
}

impl Report {
    /// A success: `json` gets `"ok": true`.
    pub fn done(mut json: Value, text: impl Into<String>) -> Self {
        json["ok"] = Value::Bool(true);
        Self {
            json,
            text: text.into(),
            note: String::new(),
            refused: false,
        }
    }

    /// A refusal (exit 1): `json` gets `"ok": false`; `reason` goes to stderr as text.
    pub fn refused(mut json: Value, reason: impl Into<String>) -> Self {
        json["ok"] = Value::Bool(false);
        Self {
            json,
            text: String::new(),
            note: reason.into(),
            refused: true,
        }
    }

    /// Adds a line for stderr in the text form.
    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }

    /// Prints the report in the form asked for and gives the exit code.
    pub fn print(self, as_json: bool) -> ExitCode {
        if as_json {
            println!("{}", self.json);
        } else {
            let (text, note) = (self.text.trim_end(), self.note.trim_end());
            if !text.is_empty() {
                println!("{text}");
            }
            if !note.is_empty() {
                eprintln!("{note}");
            }
        }
        if self.refused {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    }
}
