//! Generates synthetic log entries or metric samples as NDJSON records.
//! See `looker-gen --help`.

fn main() -> std::process::ExitCode {
    looker::gen::main()
}
