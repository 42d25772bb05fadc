//! One manual page per binary, made from its clap definition: NAME, SYNOPSIS and DESCRIPTION by
//! `clap_mangen`, then a COMMANDS section with every (visible) command, nested ones included, and
//! each command's options with their help, then the sections the caller adds (FILES, ENVIRONMENT,
//! …, as roff). The pages in `packaging/man/` are made with `onshi-edge manpage` and
//! `onshi-reconciler manpage`; a test checks they name every command and flag.

use std::io::Write;

/// The page for `cmd`, with `extra` (roff) appended.
pub fn render(cmd: &clap::Command, extra: &str) -> std::io::Result<Vec<u8>> {
    let mut cmd = cmd.clone().disable_help_subcommand(true);
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone())
        .manual("onshi")
        .source(format!("onshi {}", env!("CARGO_PKG_VERSION")));
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    writeln!(out, ".SH COMMANDS")?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        command(&mut out, cmd.get_name(), sub)?;
    }
    out.extend_from_slice(extra.as_bytes());
    Ok(out)
}

/// Every visible command path (`"pki init"`, `"serve"`, …) and the long flags of each, for tests.
pub fn commands(cmd: &clap::Command) -> Vec<(String, Vec<String>)> {
    fn walk(prefix: &str, c: &clap::Command, out: &mut Vec<(String, Vec<String>)>) {
        for sub in c.get_subcommands().filter(|s| !s.is_hide_set()) {
            let path = format!("{prefix}{}", sub.get_name()).trim().to_string();
            let flags = sub
                .get_arguments()
                .filter(|a| !a.is_hide_set())
                .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
                .filter(|l| l != "--help" && l != "--version")
                .collect();
            out.push((path.clone(), flags));
            walk(&format!("{path} "), sub, out);
        }
    }
    let mut out = Vec::new();
    walk("", cmd, &mut out);
    out
}

fn command(out: &mut Vec<u8>, prefix: &str, sub: &clap::Command) -> std::io::Result<()> {
    let path = format!("{prefix} {}", sub.get_name());
    let usage: Vec<String> = sub
        .get_arguments()
        .filter(|a| !a.is_hide_set() && a.get_id() != "help" && a.get_id() != "version")
        .map(|a| {
            if a.is_positional() {
                format!("\\fI{}\\fR", escape(&a.get_id().to_string().to_uppercase()))
            } else {
                let flag = format!("\\fB\\-\\-{}\\fR", escape(a.get_long().unwrap_or("")));
                if a.is_required_set() {
                    flag
                } else {
                    format!("[{flag}]")
                }
            }
        })
        .collect();
    writeln!(out, ".SS \"{}\"", path)?;
    writeln!(out, "\\fB{}\\fR {}", escape(&path), usage.join(" "))?;
    writeln!(out, ".br")?;
    let about = sub
        .get_long_about()
        .or(sub.get_about())
        .map(|s| s.to_string())
        .unwrap_or_default();
    writeln!(out, "{}", escape(&about))?;
    for arg in sub
        .get_arguments()
        .filter(|a| !a.is_hide_set() && a.get_id() != "help" && a.get_id() != "version")
    {
        writeln!(out, ".TP")?;
        let value = arg
            .get_value_names()
            .and_then(|v| v.first())
            .map(|v| v.to_string())
            .unwrap_or_else(|| arg.get_id().to_string().to_uppercase());
        let takes_value = arg.get_action().takes_values();
        if arg.is_positional() {
            writeln!(out, "\\fI{}\\fR", escape(&value))?;
        } else if takes_value {
            writeln!(
                out,
                "\\fB\\-\\-{}\\fR \\fI{}\\fR",
                escape(arg.get_long().unwrap_or("")),
                escape(&value)
            )?;
        } else {
            writeln!(
                out,
                "\\fB\\-\\-{}\\fR",
                escape(arg.get_long().unwrap_or(""))
            )?;
        }
        let mut help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|s| s.to_string())
            .unwrap_or_default();
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        if !defaults.is_empty() {
            help.push_str(&format!(" (default: {})", defaults.join(", ")));
        }
        let possible: Vec<String> = arg
            .get_possible_values()
            .iter()
            .filter(|p| !p.is_hide_set())
            .map(|p| p.get_name().to_string())
            .collect();
        if !possible.is_empty() && possible.len() <= 12 {
            help.push_str(&format!(" [one of: {}]", possible.join(", ")));
        }
        writeln!(out, "{}", escape(help.trim()))?;
    }
    for nested in sub.get_subcommands().filter(|s| !s.is_hide_set()) {
        command(out, &path, nested)?;
    }
    Ok(())
}

/// Text safe in roff: backslashes escaped, hyphens as `\-`, no line starting with `.` or `'`.
fn escape(text: &str) -> String {
    text.lines()
        .map(|l| {
            let l = l.replace('\\', "\\e").replace('-', "\\-");
            if l.starts_with('.') || l.starts_with('\'') {
                format!("\\&{l}")
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_and_flag_is_on_the_page() {
        let cmd = clap::Command::new("tool")
            .about("A tool.")
            .subcommand(
                clap::Command::new("pki").subcommand(
                    clap::Command::new("init")
                        .about("Make certificates.")
                        .arg(clap::Arg::new("dir").long("dir").help(".hidden-dir path")),
                ),
            )
            .subcommand(
                clap::Command::new("run")
                    .about("Run.")
                    .arg(clap::Arg::new("file").help("A file")),
            );
        let page = String::from_utf8(render(&cmd, ".SH FILES\nnone\n").unwrap()).unwrap();
        assert!(page.contains(".SS \"tool pki init\""), "{page}");
        assert!(page.contains("\\fB\\-\\-dir\\fR"), "{page}");
        assert!(page.contains("\\&.hidden\\-dir path"), "{page}");
        assert!(page.ends_with(".SH FILES\nnone\n"));
        let listed = commands(&cmd);
        assert_eq!(
            listed,
            vec![
                ("pki".to_string(), vec![]),
                ("pki init".to_string(), vec!["--dir".to_string()]),
                ("run".to_string(), vec![]),
            ]
        );
    }
}
