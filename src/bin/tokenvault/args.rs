//! The command line's grammar (docs/design.md section 6), as clap derive types.
//!
//! Invariants: no argument carries the passphrase (it comes from a prompt, a file or the
//! environment); every secret `find` takes can come from stdin or a file instead of an
//! argument; `find` accepts exactly the key combinations of the section 3 rules, so a
//! query that no rule could answer is a usage error (exit 2), not an empty result.

use std::path::PathBuf;

use clap::builder::NonEmptyStringValueParser;
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use tokenvault::{Engine, KdfParams};

/// Manage an encrypted tokenvault, and migrate tokens from the Zoho SDK's stores.
///
/// The passphrase is read from --passphrase-file, else from the environment variable
/// TOKENVAULT_PASSPHRASE, else from a no-echo prompt on the terminal; never from an argument.
///
/// Exit codes: 0 success; 1 an error (no match, bad input, corrupted vault); 2 a usage
/// error; 3 wrong passphrase; 4 the vault is open in another process.
#[derive(Debug, Parser)]
#[command(name = "tokenvault", version, max_term_width = 100)]
pub struct Cli {
    /// The vault: its directory, or (built with the feature `etcd`) an etcd location,
    /// etcd://HOST:PORT[,HOST:PORT...]/PREFIX, which many processes may use at once.
    #[arg(long, value_name = "DIR", global = true)]
    pub vault: Option<PathBuf>,

    /// Read the passphrase from this file (its content less one trailing newline).
    #[arg(long, value_name = "FILE", global = true)]
    pub passphrase_file: Option<PathBuf>,

    /// Print JSON instead of human-readable output.
    #[arg(long, global = true)]
    pub json: bool,

    /// Argon2id cost that `init` writes, and that opening upgrades weaker vaults to;
    /// `passwd` keeps a vault's stronger stored cost (see `passwd --allow-weaker-kdf`).
    /// `floor` (19 MiB, t=2, p=1) makes every passphrase guess cheaper: for tests only.
    #[arg(
        long,
        value_enum,
        value_name = "COST",
        global = true,
        env = "TOKENVAULT_KDF",
        default_value_t = KdfChoice::Recommended
    )]
    pub kdf: KdfChoice,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The Argon2id parameter sets the command line offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KdfChoice {
    /// 64 MiB, 3 passes, 4 lanes (RFC 9106's second recommendation).
    Recommended,
    /// 19 MiB, 2 passes, 1 lane: the weakest accepted; for tests.
    Floor,
}

impl KdfChoice {
    /// The library's parameters for this choice.
    pub fn params(self) -> KdfParams {
        match self {
            KdfChoice::Recommended => KdfParams::RECOMMENDED,
            KdfChoice::Floor => KdfParams::FLOOR,
        }
    }
}

/// The storage engines the command line offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EngineChoice {
    /// sled 0.34.
    Sled,
    /// redb 4.6.
    Redb,
}

impl EngineChoice {
    /// The library's engine for this choice.
    pub fn engine(self) -> Engine {
        match self {
            EngineChoice::Sled => Engine::Sled,
            EngineChoice::Redb => Engine::Redb,
        }
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new, empty vault at --vault.
    Init {
        /// The storage engine: sled (the default), or redb for vaults larger than the
        /// page cache (faster lookups and reopens there). Every other command recognises
        /// the engine from the vault's files.
        #[arg(long, value_enum, value_name = "ENGINE", default_value_t = EngineChoice::Sled)]
        engine: EngineChoice,
    },
    /// Change the passphrase; the new one comes from --new-passphrase-file, else
    /// TOKENVAULT_NEW_PASSPHRASE, else a prompt.
    Passwd {
        /// Read the new passphrase from this file.
        #[arg(long, value_name = "FILE")]
        new_passphrase_file: Option<PathBuf>,
        /// Write exactly the --kdf cost, even where the vault's stored cost is higher
        /// (by default each parameter keeps the higher of the two).
        #[arg(long)]
        allow_weaker_kdf: bool,
    },
    /// Save one token (a JSON object on stdin) or several (a JSON array); prints the ids.
    Save,
    /// Find a token: by --user, by --access-token, or by --grant-token and/or
    /// --refresh-token with --client-id and --client-secret. A secret given as - is read
    /// from stdin; each also has a --…-file form.
    Find(Box<FindArgs>),
    /// Show the token with this id.
    Get {
        /// The token's id.
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        id: String,
        #[command(flatten)]
        show: Show,
    },
    /// List every token (a table; secrets redacted).
    List {
        #[command(flatten)]
        show: Show,
    },
    /// Delete the token with this id, or every token with --all.
    #[command(group(ArgGroup::new("what").required(true).args(["id", "all"])))]
    Delete {
        /// The token's id.
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        id: Option<String>,
        /// Delete every token (asks for confirmation on a terminal).
        #[arg(long)]
        all: bool,
        /// Do not ask for confirmation (required with --all when not on a terminal).
        #[arg(long, conflicts_with = "id")]
        yes: bool,
    },
    /// Open every record and check every index entry; exit 1 if anything is wrong.
    Verify,
    /// Rewrite the vault into fresh storage so that nothing deleted, replaced or
    /// re-keyed stays readable in its files.
    Compact,
    /// Set aside every record that no longer opens (its bytes are kept in the vault's
    /// quarantine) and rebuild the indexes; exit 1 if a problem remains.
    Repair,
    /// Import the SDK's file-store CSV (sdk_tokens.txt) or a SQLite file with its
    /// `oauthtoken` table (zohooauth.db); the file is only read.
    Import {
        /// The CSV or SQLite file (told apart by content).
        file: PathBuf,
    },
    /// Print every token as a JSON array (secrets redacted unless --reveal).
    Export {
        #[command(flatten)]
        show: Show,
    },
}

/// How tokens are shown.
#[derive(Debug, Args, Clone, Copy)]
pub struct Show {
    /// Print secrets (client secret, grant, refresh and access tokens) instead of
    /// [REDACTED].
    #[arg(long)]
    pub reveal: bool,
}

/// `find`'s keys: exactly the combinations a section 3 rule answers. Each secret (access,
/// grant and refresh token, client secret) is given as an argument, as `-` to read it
/// from stdin, or with its `--…-file` option; an argument is visible to other local users
/// (`ps`) while the command runs, stdin and files are not.
#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("key")
        .required(true)
        .multiple(true)
        .args(["user", "access_token", "access_token_file", "grant_token", "grant_token_file",
               "refresh_token", "refresh_token_file"])
))]
#[command(group(
    ArgGroup::new("access")
        .args(["access_token", "access_token_file"])
        .conflicts_with_all(["user", "grant", "refresh", "client_id", "secret"])
))]
#[command(group(
    ArgGroup::new("grant")
        .args(["grant_token", "grant_token_file"])
        .requires_all(["client_id", "secret"])
))]
#[command(group(
    ArgGroup::new("refresh")
        .args(["refresh_token", "refresh_token_file"])
        .requires_all(["client_id", "secret"])
))]
#[command(group(ArgGroup::new("secret").args(["client_secret", "client_secret_file"])))]
pub struct FindArgs {
    /// The user name (the SDK's user signature).
    #[arg(
        long,
        value_name = "U",
        value_parser = NonEmptyStringValueParser::new(),
        conflicts_with_all = ["access", "grant", "refresh", "client_id", "secret"]
    )]
    pub user: Option<String>,
    /// The access token, or - to read it from stdin.
    #[arg(long, value_name = "A", value_parser = NonEmptyStringValueParser::new())]
    pub access_token: Option<String>,
    /// Read the access token from this file.
    #[arg(long, value_name = "FILE")]
    pub access_token_file: Option<PathBuf>,
    /// The grant token, or - to read it from stdin (needs --client-id and a client secret).
    #[arg(long, value_name = "G", value_parser = NonEmptyStringValueParser::new())]
    pub grant_token: Option<String>,
    /// Read the grant token from this file.
    #[arg(long, value_name = "FILE")]
    pub grant_token_file: Option<PathBuf>,
    /// The refresh token, or - to read it from stdin (needs --client-id and a client secret).
    #[arg(long, value_name = "R", value_parser = NonEmptyStringValueParser::new())]
    pub refresh_token: Option<String>,
    /// Read the refresh token from this file.
    #[arg(long, value_name = "FILE")]
    pub refresh_token_file: Option<PathBuf>,
    /// The OAuth client id the token must belong to.
    #[arg(long, value_name = "C", value_parser = NonEmptyStringValueParser::new())]
    pub client_id: Option<String>,
    /// The OAuth client secret, or - to read it from stdin (required by the rule, not
    /// compared).
    #[arg(long, value_name = "S", value_parser = NonEmptyStringValueParser::new())]
    pub client_secret: Option<String>,
    /// Read the client secret from this file.
    #[arg(long, value_name = "FILE")]
    pub client_secret_file: Option<PathBuf>,
    #[command(flatten)]
    pub show: Show,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_grammar_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn find_refuses_combinations_no_rule_answers() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["tokenvault", "find"], args].concat());
        assert!(parse(&["--user", "u"]).is_ok());
        assert!(parse(&["--access-token", "a"]).is_ok());
        assert!(parse(&["--grant-token", "g", "--client-id", "c", "--client-secret", "s"]).is_ok());
        assert!(parse(&[
            "--grant-token",
            "g",
            "--refresh-token",
            "r",
            "--client-id",
            "c",
            "--client-secret",
            "s"
        ])
        .is_ok());
        assert!(parse(&[]).is_err());
        assert!(parse(&["--user", "u", "--access-token", "a"]).is_err());
        assert!(parse(&["--access-token", "a", "--client-id", "c"]).is_err());
        assert!(parse(&["--refresh-token", "r", "--client-id", "c"]).is_err());
        assert!(parse(&["--client-id", "c", "--client-secret", "s"]).is_err());
        assert!(parse(&["--user", ""]).is_err());
        // The file forms take the place of the arguments, one form per key.
        assert!(parse(&["--access-token-file", "f"]).is_ok());
        assert!(parse(&["--access-token", "-"]).is_ok());
        assert!(parse(&["--access-token", "a", "--access-token-file", "f"]).is_err());
        assert!(parse(&["--access-token-file", "f", "--client-secret-file", "s"]).is_err());
        assert!(parse(&["--user", "u", "--access-token-file", "f"]).is_err());
        assert!(parse(&[
            "--grant-token-file",
            "g",
            "--client-id",
            "c",
            "--client-secret-file",
            "s"
        ])
        .is_ok());
        assert!(parse(&[
            "--refresh-token",
            "-",
            "--client-id",
            "c",
            "--client-secret-file",
            "s"
        ])
        .is_ok());
        assert!(parse(&["--refresh-token-file", "r", "--client-id", "c"]).is_err());
        assert!(parse(&["--refresh-token-file", "r", "--client-secret", "s"]).is_err());
        assert!(parse(&[
            "--grant-token",
            "g",
            "--client-id",
            "c",
            "--client-secret",
            "s",
            "--client-secret-file",
            "f"
        ])
        .is_err());
        assert!(parse(&["--client-secret-file", "f", "--client-id", "c"]).is_err());
    }

    #[test]
    fn delete_takes_an_id_or_all() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["tokenvault", "delete"], args].concat());
        assert!(parse(&["abc"]).is_ok());
        assert!(parse(&["--all"]).is_ok());
        assert!(parse(&["--all", "--yes"]).is_ok());
        assert!(parse(&[]).is_err());
        assert!(parse(&["abc", "--all"]).is_err());
        assert!(parse(&["abc", "--yes"]).is_err());
        assert!(parse(&["--yes"]).is_err());
    }
}
