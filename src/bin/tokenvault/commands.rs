//! The commands of docs/design.md section 6, each on an open vault.
//!
//! Invariants: input is read and checked before the vault is opened or anything is
//! written (a malformed file or JSON writes nothing), then handed on one token at a time,
//! so memory does not grow with the input's number of tokens; the vault is opened with buffered
//! writes and flushed, with any error reported, before a writing command reports
//! success; stdout carries only the command's output, stderr only the error.

use std::cmp::Ordering;
use std::io::{BufRead, IsTerminal, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use serde_json::json;
use tokenvault::{Engine, Error, OAuthToken, Saved, TokenStore, Vault, VaultOptions};

use crate::args::{Cli, Command, FindArgs, KdfChoice, Show};
use crate::failure::{quoted, Failure, EXIT_FAILURE};
use crate::import::{self, Location};
use crate::output::{self, Escaped, Text};
use crate::passphrase::{self, Source, ENV_NEW_PASSPHRASE, ENV_PASSPHRASE};
use crate::{find_keys, input, progress, secret_buf};

/// What every command knows.
struct Context {
    dir: PathBuf,
    passphrase_file: Option<PathBuf>,
    json: bool,
    kdf: KdfChoice,
    /// `passwd --allow-weaker-kdf`.
    allow_weaker_kdf: bool,
}

impl Context {
    fn options(&self) -> VaultOptions {
        // Buffered writes, flushed (with errors reported) before a command succeeds.
        VaultOptions::new()
            .kdf(self.kdf.params())
            .allow_weaker_kdf(self.allow_weaker_kdf)
            .durable(false)
    }

    fn source(&self) -> Source<'_> {
        Source {
            file: self.passphrase_file.as_deref(),
            env: ENV_PASSPHRASE,
            file_flag: "--passphrase-file",
            label: "Passphrase",
        }
    }

    fn fail(&self, error: Error) -> Failure {
        Failure::vault(error, &self.dir)
    }

    fn open(&self) -> Result<Vault, Failure> {
        let passphrase = passphrase::existing(&self.source(), &self.dir)?;
        match self.remote() {
            Some(location) => self.options().open_at(location, &passphrase),
            None => self.options().open(&self.dir, &passphrase),
        }
        .map_err(|e| self.fail(e))
    }

    /// The `etcd://` location `--vault` names, if it names one rather than a directory.
    fn remote(&self) -> Option<&str> {
        self.dir.to_str().filter(|s| s.starts_with("etcd://"))
    }

    fn flush(&self, vault: &Vault) -> Result<(), Failure> {
        vault.flush().map_err(|e| self.fail(e))
    }

    /// Human text or JSON, as asked.
    fn print(
        &self,
        human: impl FnOnce() -> String,
        json: impl FnOnce() -> serde_json::Value,
    ) -> Result<(), Failure> {
        if self.json {
            print(&output::json(&json()))
        } else {
            print(&human())
        }
    }
}

/// Writes command output to stdout, unbuffered (std's buffer would keep a copy of the
/// last revealed secret).
fn print(text: &str) -> Result<(), Failure> {
    secret_buf::write_stdout(text.as_bytes()).map_err(|e| match e.kind() {
        // The reader went away (`| head`): nothing to tell it.
        std::io::ErrorKind::BrokenPipe => Failure::with_code(EXIT_FAILURE, ""),
        _ => Failure::error(format!("cannot write to stdout: {e}")),
    })
}

/// Runs the command `cli` asks for on the vault at `dir`.
///
/// # Errors
/// Whatever failed, with its exit code.
pub fn run(cli: Cli, dir: PathBuf) -> Result<(), Failure> {
    let ctx = Context {
        dir,
        passphrase_file: cli.passphrase_file,
        json: cli.json,
        kdf: cli.kdf,
        allow_weaker_kdf: matches!(
            cli.command,
            Command::Passwd {
                allow_weaker_kdf: true,
                ..
            }
        ),
    };
    match cli.command {
        Command::Init { engine } => init(&ctx, engine.engine()),
        Command::Passwd {
            new_passphrase_file, ..
        } => passwd(&ctx, new_passphrase_file.as_deref()),
        Command::Save => save(&ctx),
        Command::Find(args) => find(&ctx, &args),
        Command::Get { id, show } => get(&ctx, &id, show),
        Command::List { show } => list(&ctx, show),
        Command::Delete { id: Some(id), .. } => delete(&ctx, &id),
        Command::Delete { yes, .. } => delete_all(&ctx, yes),
        Command::Verify => verify(&ctx),
        Command::Repair => repair(&ctx),
        Command::Compact => compact(&ctx),
        Command::Import { file } => import(&ctx, &file),
        Command::Export { show } => export(&ctx, show),
    }
}

fn init(ctx: &Context, engine: Engine) -> Result<(), Failure> {
    if let Some(location) = ctx.remote() {
        let passphrase = passphrase::new(&ctx.source(), &ctx.dir)?;
        drop(
            ctx.options()
                .create_at(location, &passphrase)
                .map_err(|e| ctx.fail(e))?,
        );
        return ctx.print(
            || format!("Created an empty vault at {location} (engine: etcd).\n"),
            || json!({ "created": location, "engine": "etcd" }),
        );
    }
    // Refuse before asking for a passphrase; `create` checks again.
    let occupied = ctx.dir.exists()
        && (!ctx.dir.is_dir()
            || std::fs::read_dir(&ctx.dir)
                .map(|mut entries| entries.next().is_some())
                .unwrap_or(false));
    if occupied {
        return Err(ctx.fail(Error::VaultExists));
    }
    let passphrase = passphrase::new(&ctx.source(), &ctx.dir)?;
    let vault = ctx
        .options()
        .engine(engine)
        .create(&ctx.dir, &passphrase)
        .map_err(|e| ctx.fail(e))?;
    ctx.flush(&vault)?;
    drop(vault);
    let dir = ctx.dir.display().to_string();
    ctx.print(
        || format!("Created an empty vault at {dir} (engine: {engine}).\n"),
        || json!({ "created": dir, "engine": engine.name() }),
    )
}

fn passwd(ctx: &Context, new_file: Option<&Path>) -> Result<(), Failure> {
    let vault = ctx.open()?;
    let source = Source {
        file: new_file,
        env: ENV_NEW_PASSPHRASE,
        file_flag: "--new-passphrase-file",
        label: "New passphrase",
    };
    let new = passphrase::new(&source, &ctx.dir)?;
    vault.change_passphrase(&new).map_err(|e| ctx.fail(e))?;
    ctx.flush(&vault)?;
    let dir = ctx.dir.display().to_string();
    ctx.print(
        || format!("Changed the passphrase of the vault at {dir}.\n"),
        || json!({ "changed": dir }),
    )
}

fn save(ctx: &Context) -> Result<(), Failure> {
    let tokens = input::read_stdin()?;
    let vault = ctx.open()?;
    let (total, array) = (tokens.count(), tokens.array());
    let mut ids = Vec::with_capacity(total);
    let saved = tokens.for_each(|i, mut token| match vault.save_token(&mut token) {
        Ok(()) => {
            ids.push(token.id().unwrap_or_default().to_owned());
            Ok(())
        }
        Err(e) => {
            let f = ctx.fail(e);
            let which = if array {
                format!("token {i} of {total}")
            } else {
                "the token".to_owned()
            };
            let before = match i - 1 {
                0 => String::new(),
                1 => "; the one before it was saved".to_owned(),
                n => format!("; the {n} before it were saved"),
            };
            Err(Failure::with_code(
                f.code,
                format!("{which} was not saved: {f}{before}"),
            ))
        }
    });
    ctx.flush(&vault)?;
    if !ids.is_empty() {
        ctx.print(
            || ids.iter().map(|id| format!("{}\n", Escaped(id))).collect(),
            || {
                let objects: Vec<_> = ids.iter().map(|id| json!({ "id": id })).collect();
                match (array, objects.first()) {
                    (false, Some(one)) => one.clone(),
                    _ => serde_json::Value::Array(objects),
                }
            },
        )?;
    }
    saved
}

fn find(ctx: &Context, args: &FindArgs) -> Result<(), Failure> {
    // Read before the vault is opened: a refused key costs no passphrase.
    let keys = find_keys::read(args)?;
    let mut query = OAuthToken::default();
    query.set_user_name(args.user.as_deref());
    query.set_access_token(keys.access_token.as_deref().map(String::as_str));
    query.set_grant_token(keys.grant_token.as_deref().map(String::as_str));
    query.set_refresh_token(keys.refresh_token.as_deref().map(String::as_str));
    query.set_client_id(args.client_id.as_deref());
    query.set_client_secret(keys.client_secret.as_deref().map(String::as_str));
    let vault = ctx.open()?;
    let found = vault.find_token(&query).map_err(|e| ctx.fail(e))?;
    let Some(token) = found else {
        return Err(Failure::error(
            match (&args.user, &keys.access_token, &args.client_id) {
                (Some(user), _, _) => format!("no token is stored for the user {}", quoted(user)),
                (_, Some(_), _) => "no token has this access token".to_owned(),
                (_, _, Some(client)) => format!(
                    "no token of the client {} has this grant or refresh token",
                    quoted(client)
                ),
                _ => "no token matches".to_owned(),
            },
        ));
    };
    show_token(ctx, &token, args.show)
}

fn get(ctx: &Context, id: &str, show: Show) -> Result<(), Failure> {
    let vault = ctx.open()?;
    match vault.find_token_by_id(id).map_err(|e| ctx.fail(e))? {
        Some(token) => show_token(ctx, &token, show),
        None => Err(no_such_id(id)),
    }
}

fn no_such_id(id: &str) -> Failure {
    Failure::error(format!("no token has the id {}", quoted(id)))
}

fn show_token(ctx: &Context, token: &OAuthToken, show: Show) -> Result<(), Failure> {
    let text: Text = if ctx.json {
        output::json(&output::TokenJson::new(token, show.reveal))
    } else {
        output::token_text(token, show.reveal)
    };
    print(&text)
}

/// By user name, then id: a stable order for people and diffs.
fn by_user_then_id(a: &OAuthToken, b: &OAuthToken) -> Ordering {
    (a.user_name(), a.id()).cmp(&(b.user_name(), b.id()))
}

fn list(ctx: &Context, show: Show) -> Result<(), Failure> {
    let vault = ctx.open()?;
    let mut tokens = vault.get_tokens().map_err(|e| ctx.fail(e))?;
    tokens.sort_by(by_user_then_id);
    let text = if ctx.json {
        output::tokens_json(&tokens, show.reveal)
    } else {
        let mut text = output::tokens_table(&tokens, show.reveal);
        // Tokens a repair set aside are not in the list: say so, not only in `verify`.
        let aside = vault.quarantined().map_err(|e| ctx.fail(e))?.len();
        if aside > 0 {
            text.push_str(&format!(
                "{} set aside by repair (damaged; kept in the vault's quarantine, listed by \
                 `tokenvault verify`).\n",
                plural(aside, "record", "records")
            ));
        }
        text
    };
    print(&text)
}

fn export(ctx: &Context, show: Show) -> Result<(), Failure> {
    let vault = ctx.open()?;
    let mut tokens = vault.get_tokens().map_err(|e| ctx.fail(e))?;
    tokens.sort_by(|a, b| a.id().cmp(&b.id()));
    print(&output::tokens_json(&tokens, show.reveal))
}

fn delete(ctx: &Context, id: &str) -> Result<(), Failure> {
    let vault = ctx.open()?;
    if vault.find_token_by_id(id).map_err(|e| ctx.fail(e))?.is_none() {
        return Err(no_such_id(id));
    }
    vault.delete_token(id).map_err(|e| ctx.fail(e))?;
    ctx.flush(&vault)?;
    ctx.print(
        || format!("Deleted the token {}.\n", Escaped(id)),
        || json!({ "deleted": [id] }),
    )
}

fn delete_all(ctx: &Context, yes: bool) -> Result<(), Failure> {
    let on_terminal = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    if !yes && !on_terminal {
        return Err(Failure::usage(
            "delete --all asks for confirmation on a terminal; add --yes to delete every token without asking",
        ));
    }
    let vault = ctx.open()?;
    let count = vault.get_tokens().map_err(|e| ctx.fail(e))?.len();
    let what = match count {
        1 => "the only token".to_owned(),
        n => format!("all {n} tokens"),
    };
    if !yes
        && !confirm(&format!(
            "Delete {what} in {}? Type \"yes\" to confirm: ",
            ctx.dir.display()
        ))?
    {
        return Err(Failure::error("not confirmed; nothing was deleted"));
    }
    vault.delete_tokens().map_err(|e| ctx.fail(e))?;
    ctx.flush(&vault)?;
    ctx.print(
        || format!("Deleted {what}.\n"),
        || json!({ "deleted_count": count }),
    )
}

/// Asks on the terminal; only "yes" confirms.
fn confirm(question: &str) -> Result<bool, Failure> {
    let mut err = std::io::stderr();
    let _ = err.write_all(question.as_bytes()).and_then(|()| err.flush());
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Failure::error(format!("cannot read the answer: {e}")))?;
    Ok(answer.trim() == "yes")
}

fn verify(ctx: &Context) -> Result<(), Failure> {
    let vault = ctx.open()?;
    let spinner = progress::spinner("Verifying every record and index entry");
    let report = vault.verify();
    spinner.finish_and_clear();
    let report = report.map_err(|e| ctx.fail(e))?;
    report_check(ctx, &report, false)
}

fn compact(ctx: &Context) -> Result<(), Failure> {
    let vault = ctx.open()?;
    let spinner = progress::spinner("Compacting the vault");
    let done = vault.compact();
    spinner.finish_and_clear();
    done.map_err(|e| ctx.fail(e))?;
    ctx.print(
        || {
            format!(
                "Compacted the vault at {}: nothing deleted or replaced is left in its files.\n",
                ctx.dir.display()
            )
        },
        || json!({ "compacted": true }),
    )
}

fn repair(ctx: &Context) -> Result<(), Failure> {
    let vault = ctx.open()?;
    let spinner = progress::spinner("Repairing the vault");
    let report = vault.repair();
    spinner.finish_and_clear();
    let report = report.map_err(|e| ctx.fail(e))?;
    report_check(ctx, &report, true)
}

/// Prints a verify or repair report; a problem left is an error (exit 1).
fn report_check(ctx: &Context, report: &tokenvault::VerifyReport, repaired: bool) -> Result<(), Failure> {
    let checked = if repaired {
        "After the repair: checked"
    } else {
        "Checked"
    };
    let problems: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    let set_aside: Vec<String> = report.set_aside.iter().map(ToString::to_string).collect();
    let quarantined: Vec<String> = report.quarantined.iter().map(ToString::to_string).collect();
    ctx.print(
        || {
            let mut text = String::new();
            match set_aside.len() {
                0 => {}
                1 => text.push_str("Set aside 1 damaged record (kept in the vault's quarantine):\n"),
                n => text.push_str(&format!(
                    "Set aside {n} damaged records (kept in the vault's quarantine):\n"
                )),
            }
            for r in &set_aside {
                text.push_str(&format!("  {}\n", Escaped(r)));
            }
            text.push_str(&format!(
                "{checked} {} and {}: ",
                plural(report.records, "record", "records"),
                plural(report.index_entries, "index entry", "index entries")
            ));
            match problems.len() {
                0 => text.push_str("no problems.\n"),
                1 => text.push_str("1 problem:\n"),
                n => text.push_str(&format!("{n} problems:\n")),
            }
            for p in &problems {
                text.push_str(&format!("  {}\n", Escaped(p)));
            }
            if !quarantined.is_empty() && set_aside.len() != quarantined.len() {
                text.push_str(&format!(
                    "{} in the quarantine (set aside by repair; save those tokens again):\n",
                    plural(quarantined.len(), "record", "records")
                ));
                for r in &quarantined {
                    text.push_str(&format!("  {}\n", Escaped(r)));
                }
            }
            text
        },
        || {
            let listed = |records: &[tokenvault::QuarantinedRecord]| {
                records
                    .iter()
                    .map(|r| json!({ "id": r.id, "slot": r.slot }))
                    .collect::<Vec<_>>()
            };
            let mut out = json!({
                "records": report.records,
                "index_entries": report.index_entries,
                "problems": problems,
                "quarantined": listed(&report.quarantined),
            });
            if let (true, Some(fields)) = (repaired, out.as_object_mut()) {
                fields.insert("set_aside".into(), json!(listed(&report.set_aside)));
            }
            out
        },
    )?;
    match problems.len() {
        0 => Ok(()),
        1 => Err(Failure::error(format!(
            "the vault at {} has a problem",
            ctx.dir.display()
        ))),
        n => Err(Failure::error(format!(
            "the vault at {} has {n} problems",
            ctx.dir.display()
        ))),
    }
}

/// "1 record", "2 records".
fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// What an import did.
#[derive(Default)]
struct ImportReport {
    imported: usize,
    updated: usize,
    rejected: Vec<(Location, String)>,
}

impl ImportReport {
    fn print(&self, ctx: &Context) -> Result<(), Failure> {
        ctx.print(
            || {
                let mut text = format!(
                    "{} imported, {} updated, {} rejected.\n",
                    self.imported,
                    self.updated,
                    self.rejected.len()
                );
                for (at, why) in &self.rejected {
                    text.push_str(&format!("{at}: rejected: {why}\n"));
                }
                text
            },
            || {
                let rejected: Vec<_> = self
                    .rejected
                    .iter()
                    .map(|(at, why)| match at {
                        Location::Line(n) => json!({ "line": n, "reason": why }),
                        Location::Row(n) => json!({ "row": n, "reason": why }),
                    })
                    .collect();
                json!({ "imported": self.imported, "updated": self.updated, "rejected": rejected })
            },
        )
    }
}

fn import(ctx: &Context, file: &Path) -> Result<(), Failure> {
    let source = import::check(file)?;
    let vault = ctx.open()?;
    let total = source.rows();
    let bar = progress::bar(total, "Importing");
    let mut report = ImportReport::default();
    let mut stopped = None;
    let read = source.for_each_row(|row| {
        let at = row.at;
        let mut token = match row.token {
            Ok(token) => token,
            Err(why) => {
                report.rejected.push((at, why));
                bar.inc(1);
                return ControlFlow::Continue(());
            }
        };
        match vault.upsert_token(&mut token) {
            Ok(Saved::Updated) => report.updated += 1,
            Ok(Saved::Inserted) => report.imported += 1,
            Err(Error::InvalidToken { reason }) => report.rejected.push((at, reason.to_owned())),
            Err(e) => {
                stopped = Some((at, ctx.fail(e)));
                return ControlFlow::Break(());
            }
        }
        bar.inc(1);
        ControlFlow::Continue(())
    });
    bar.finish_and_clear();
    let stop = match (stopped, read) {
        (Some((at, f)), _) => Some((format!("the import stopped at {at}: {f}"), f.code)),
        (None, Err(f)) => Some((format!("the import stopped: {f}"), f.code)),
        (None, Ok(())) => None,
    };
    ctx.flush(&vault)?;
    report.print(ctx)?;
    if let Some((message, code)) = stop {
        let stored = report.imported + report.updated;
        return Err(Failure::with_code(
            code,
            format!("{message}; the {stored} tokens saved before it are stored"),
        ));
    }
    match report.rejected.len() {
        0 => Ok(()),
        n => Err(Failure::error(format!(
            "{n} of {total} rows {} rejected (see the report); the others are stored",
            if n == 1 { "was" } else { "were" }
        ))),
    }
}
