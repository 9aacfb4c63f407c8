//! The `ess-wgpu` binary: the command line of `src/cli/` (one file per subcommand) over the
//! library. Every failure is an error message and a non-zero exit status, never a panic.

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap's own message, with any very long token shortened (it echoes what it got)
            let text = shorten_tokens(&e.render().to_string());
            if e.use_stderr() {
                eprint!("{text}");
                return ExitCode::from(2);
            }
            return match cli::out(format_args!("{text}")) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            };
        }
    };
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Every whitespace-separated token over 60 characters shortened as `limits::shown` does.
fn shorten_tokens(text: &str) -> String {
    if text.len() < 2000 {
        return text.to_string();
    }
    text.split_inclusive(char::is_whitespace)
        .map(|tok| {
            let word = tok.trim_end();
            if word.len() > 60 {
                format!("{}{}", ess_wgpu::limits::shown(word), &tok[word.len()..])
            } else {
                tok.to_string()
            }
        })
        .collect()
}
