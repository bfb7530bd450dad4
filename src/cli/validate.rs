//! `homeostat validate`: load and validate the manifest set, print every problem.

use clap::Args;
use serde::Serialize;

use super::{GlobalArgs, Output, exit};
use crate::desired::{Diagnostic, Kind, load_dir};

#[derive(Debug, Args)]
#[command(after_long_help = crate::desired::defaults::cluster_help())]
pub struct ValidateArgs {
    /// Output format: `table` prints problems to stderr and a summary line to stdout; `json`
    /// prints one report (valid, counts, errors, warnings, hash) to stdout.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// The `-o json` report.
#[derive(Debug, Serialize)]
struct Report<'a> {
    manifests: String,
    valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    files: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    objects: Option<&'a std::collections::BTreeMap<Kind, usize>>,
    /// sha256 of the manifest set (files and contents), when valid.
    #[serde(skip_serializing_if = "Option::is_none")]
    hash: Option<&'a str>,
    errors: Vec<&'a Diagnostic>,
    warnings: Vec<&'a Diagnostic>,
}

#[allow(clippy::print_stdout, clippy::print_stderr)] // the CLI prints its results
pub fn run(g: &GlobalArgs, a: ValidateArgs) -> anyhow::Result<u8> {
    let shown = g.manifests.display().to_string();
    match load_dir(&g.manifests) {
        Ok(loaded) => {
            match a.output {
                Output::Table => {
                    for w in &loaded.warnings {
                        eprintln!("{w}");
                    }
                    let n = loaded.summary.total();
                    println!(
                        "{shown}: {n} object{} valid ({})",
                        if n == 1 { "" } else { "s" },
                        loaded.summary.counts()
                    );
                }
                Output::Json | Output::Yaml => super::print_doc(
                    a.output,
                    &super::document(
                        "ValidationReport",
                        &Report {
                            manifests: shown,
                            valid: true,
                            files: Some(loaded.summary.files),
                            objects: Some(&loaded.summary.objects),
                            hash: Some(&loaded.state.hash),
                            errors: Vec::new(),
                            warnings: loaded.warnings.iter().collect(),
                        },
                    )?,
                )?,
            }
            Ok(exit::OK)
        }
        Err(diags) => {
            match a.output {
                Output::Table => {
                    eprintln!("{diags}");
                    let (e, w) = (diags.error_count(), diags.warning_count());
                    let plural = |n: usize| if n == 1 { "" } else { "s" };
                    let warnings =
                        if w > 0 { format!(", {w} warning{}", plural(w)) } else { String::new() };
                    eprintln!("{shown}: invalid: {e} error{}{warnings}", plural(e));
                }
                Output::Json | Output::Yaml => super::print_doc(
                    a.output,
                    &super::document(
                        "ValidationReport",
                        &Report {
                            manifests: shown,
                            valid: false,
                            files: None,
                            objects: None,
                            hash: None,
                            errors: diags.errors().collect(),
                            warnings: diags.warnings().collect(),
                        },
                    )?,
                )?,
            }
            Ok(exit::ERROR)
        }
    }
}
