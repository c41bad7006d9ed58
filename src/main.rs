//! The `airlock` command.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use airlock::auth::scram::{DEFAULT_ITERATIONS, ScramVerifier};
use airlock::config::Config;

#[derive(Parser)]
#[command(
    name = "airlock",
    version,
    about = "Database access gateway for PostgreSQL"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a config file and exit.
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Make a SCRAM-SHA-256 verifier for a [[users]] entry from a password read on stdin.
    Passwd {
        #[arg(long, default_value_t = DEFAULT_ITERATIONS)]
        iterations: usize,
        /// Print the mysql_native_password hash instead (for `mysql_native_password`).
        #[arg(long)]
        mysql_native: bool,
    },
    /// Policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Make an approver's API token: prints the token (give it to the approver) and its
    /// SHA-256 (for `token_sha256` in the config's [[approvers]]).
    Token,
    /// Decide on held statements through the admin API. The token is read from AIRLOCK_TOKEN.
    Approvals {
        /// The admin API's address.
        #[arg(
            long,
            env = "AIRLOCK_ADMIN_URL",
            default_value = "http://127.0.0.1:9090"
        )]
        url: String,
        /// Print the API's JSON as it is.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        command: ApprovalsCommand,
    },
    /// The audit trail: check its hash chain, or export it.
    Audit {
        /// Airlock's [state] dir, which holds audit.db.
        #[arg(long, default_value = "state")]
        state_dir: PathBuf,
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Sessions as the audit trail has them.
    Sessions {
        /// Airlock's [state] dir, which holds audit.db.
        #[arg(long, default_value = "state")]
        state_dir: PathBuf,
        #[command(subcommand)]
        command: SessionsCommand,
    },
    /// Write a self-signed certificate and key for local TLS (cert.pem, key.pem).
    DevCert {
        /// Directory to write into.
        #[arg(long, default_value = "dev-certs")]
        out_dir: PathBuf,
        /// Host names and addresses the certificate is valid for.
        #[arg(long = "host", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
        hosts: Vec<String>,
    },
}

#[derive(Subcommand)]
enum ApprovalsCommand {
    /// Tickets, newest first (all states unless --state).
    List {
        /// pending, escalated, approved, denied, expired or abandoned.
        #[arg(long)]
        state: Option<String>,
    },
    /// One ticket and its history.
    Show { id: i64 },
    /// Approve a ticket: the held statement runs once enough approvers have.
    Approve {
        id: i64,
        /// once (the held statement only), session (and the rest of that session's
        /// statements the same rule holds), or minutes such as 30m (the same, for 30 minutes).
        #[arg(long, default_value = "once")]
        scope: String,
    },
    /// Deny a ticket; the client is told the reason.
    Deny {
        id: i64,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
enum SessionsCommand {
    /// Every session: who, from where, when, how long, how many statements and refusals.
    List,
    /// One session (LISTENER:ID, as the list shows it) as a transcript.
    Show { session: String },
    /// Play a session's transcript back with its original pacing.
    Replay {
        session: String,
        /// Faster (2 = twice as fast) or slower (0.5).
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the hash chain and check it against the signed checkpoints; fails naming the
    /// first record edited, removed, reordered or forged, or a cut or rewritten trail.
    Verify {
        /// A checkpoint kept elsewhere (from `airlock audit checkpoint --out`).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Accept only checkpoints signed by this Ed25519 public key (hex).
        #[arg(long)]
        public_key: Option<String>,
    },
    /// Make an Ed25519 key for signing checkpoints (PKCS#8); prints its public key.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a checkpoint of the trail's head now; stores it with the trail and prints it.
    Checkpoint {
        /// The signing key (from `airlock audit keygen`).
        #[arg(long)]
        key: PathBuf,
        /// Also write it to this file, to keep elsewhere.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Remove records older than a time, after signing a checkpoint of the last one removed.
    Prune {
        /// Unix seconds, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ (UTC).
        #[arg(long)]
        before: String,
        #[arg(long)]
        key: PathBuf,
    },
    /// Write the records of a period to stdout.
    Export {
        #[arg(long, value_enum, default_value = "jsonl")]
        format: airlock::audit::export::Format,
        /// From this time: Unix seconds, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ (UTC).
        #[arg(long)]
        since: Option<String>,
        /// Up to (not including) this time.
        #[arg(long)]
        until: Option<String>,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Show what the policy decides for a statement, and why.
    Check {
        /// Directory holding the policy files (*.toml).
        #[arg(long, default_value = "policies")]
        policy_dir: PathBuf,
        /// The user asking.
        #[arg(long = "as")]
        user: String,
        /// Groups of that user (repeat for several).
        #[arg(long = "group")]
        groups: Vec<String>,
        #[arg(long, default_value = "postgres")]
        listener: String,
        #[arg(long, default_value = "postgres")]
        database: String,
        /// The SQL text.
        sql: String,
    },
    /// Run case files (statement, identity, expected decision) against the policy.
    Test {
        #[arg(long, default_value = "policies")]
        policy_dir: PathBuf,
        #[arg(long, default_value = "policies/cases")]
        cases_dir: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    airlock::app::init_logging();
    match Cli::parse().command {
        Command::Serve { config } => airlock::app::serve(Config::load(&config)?),
        Command::CheckConfig { config } => {
            let config = Config::load(&config)?;
            let inspectors = airlock::app::guards(&config)?;
            // The listeners' certificates and secrets, without opening the state store.
            airlock::app::contexts(&config, &inspectors, None)?;
            println!("config OK");
            Ok(())
        }
        Command::Passwd {
            iterations,
            mysql_native,
        } => {
            let password = read_password()?;
            if mysql_native {
                println!(
                    "{}",
                    airlock::auth::mysql::NativeHash::from_password(&password)
                );
            } else {
                println!("{}", ScramVerifier::from_password(&password, iterations));
            }
            Ok(())
        }
        Command::Policy {
            command:
                PolicyCommand::Check {
                    policy_dir,
                    user,
                    groups,
                    listener,
                    database,
                    sql,
                },
        } => {
            let policy =
                airlock::policy::Policy::parse(&airlock::app::read_policy_files(&policy_dir)?)?;
            let asker = airlock::policy::explain::Asker {
                user: &user,
                groups: &groups,
                listener: &listener,
                database: &database,
            };
            let dialect = airlock::sql::Dialect::of_listener(&listener);
            print!(
                "{}",
                airlock::policy::explain::explain(&policy, &asker, &sql, dialect)
            );
            Ok(())
        }
        Command::Policy {
            command:
                PolicyCommand::Test {
                    policy_dir,
                    cases_dir,
                },
        } => {
            let policy =
                airlock::policy::Policy::parse(&airlock::app::read_policy_files(&policy_dir)?)?;
            let report =
                airlock::policy::cases::run(&policy, &airlock::app::read_policy_files(&cases_dir)?);
            for failure in &report.failures {
                println!("FAIL {failure}");
            }
            println!("{} passed, {} failed", report.passed, report.failures.len());
            anyhow::ensure!(report.failures.is_empty(), "policy cases failed");
            Ok(())
        }
        Command::Audit { state_dir, command } => match command {
            AuditCommand::Verify {
                checkpoint,
                public_key,
            } => {
                let external = match checkpoint {
                    Some(path) => {
                        let text = std::fs::read_to_string(&path)
                            .with_context(|| format!("cannot read {}", path.display()))?;
                        Some(serde_json::from_str(&text).with_context(|| {
                            format!("{} is not an Airlock checkpoint", path.display())
                        })?)
                    }
                    None => None,
                };
                let v =
                    airlock::audit::verify(&state_dir, external.as_ref(), public_key.as_deref())?;
                let head = airlock::audit::record::hex(&v.head.hash);
                match v.broken {
                    None => {
                        println!(
                            "audit trail OK: {} records, head {} {head}, {} checkpoints match",
                            v.records, v.head.seq, v.checkpoints
                        );
                        Ok(())
                    }
                    Some(broken) => {
                        println!(
                            "audit trail BROKEN after {} good records: {broken}",
                            v.records
                        );
                        anyhow::bail!("the audit trail does not verify")
                    }
                }
            }
            AuditCommand::Keygen { out } => {
                let key = airlock::audit::checkpoint::Signer::generate();
                write_private(&out, &key)?;
                let signer = airlock::audit::checkpoint::Signer::from_pkcs8(&key)?;
                println!("public_key: {}", signer.public_key());
                Ok(())
            }
            AuditCommand::Checkpoint { key, out } => {
                let signer = read_signer(&key)?;
                match airlock::audit::checkpoint_now(&state_dir, &signer)? {
                    Ok(c) => {
                        let text = serde_json::to_string_pretty(&c)?;
                        if let Some(out) = out {
                            std::fs::write(&out, &text)
                                .with_context(|| format!("cannot write {}", out.display()))?;
                        }
                        println!("{text}");
                        Ok(())
                    }
                    Err(broken) => anyhow::bail!("not signing a broken trail: {broken}"),
                }
            }
            AuditCommand::Prune { before, key } => {
                let signer = read_signer(&key)?;
                let before = airlock::audit::export::parse_time(&before).ok_or_else(|| {
                    anyhow::anyhow!("cannot read the time {before:?}: use Unix seconds, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ")
                })?;
                match airlock::audit::prune(&state_dir, before, &signer)? {
                    Ok(n) => {
                        println!("removed {n} records, under a signed prune checkpoint");
                        Ok(())
                    }
                    Err(broken) => anyhow::bail!("not pruning a broken trail: {broken}"),
                }
            }
            AuditCommand::Export {
                format,
                since,
                until,
            } => {
                let time = |t: Option<String>| -> anyhow::Result<Option<i64>> {
                    t.map(|t| {
                        airlock::audit::export::parse_time(&t).ok_or_else(|| {
                            anyhow::anyhow!(
                                "cannot read the time {t:?}: use Unix seconds, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ"
                            )
                        })
                    })
                    .transpose()
                };
                let (since, until) = (time(since)?, time(until)?);
                let stdout = std::io::stdout();
                let mut out = std::io::BufWriter::new(stdout.lock());
                let n = airlock::audit::export(&state_dir, format, since, until, &mut out)?;
                eprintln!("{n} records");
                Ok(())
            }
        },
        Command::Sessions { state_dir, command } => {
            use airlock::audit::sessions::{self, SessionKey};
            let all = sessions::sessions(airlock::audit::records(&state_dir)?);
            let find = |text: &str| -> anyhow::Result<(SessionKey, &sessions::Session)> {
                let key = SessionKey::parse(text).ok_or_else(|| {
                    anyhow::anyhow!("{text:?} is not a session: use LISTENER:ID as `airlock sessions list` shows")
                })?;
                let s = all
                    .get(&key)
                    .ok_or_else(|| anyhow::anyhow!("no session {key} in the audit trail"))?;
                Ok((key, s))
            };
            match command {
                SessionsCommand::List => print!("{}", sessions::list(&all)),
                SessionsCommand::Show { session } => {
                    let (key, s) = find(&session)?;
                    print!("{}", sessions::transcript(&key, s));
                }
                SessionsCommand::Replay { session, speed } => {
                    anyhow::ensure!(speed > 0.0, "--speed must be above 0");
                    let (key, s) = find(&session)?;
                    let (header, steps, footer) = sessions::transcript_parts(&key, s);
                    use std::io::Write;
                    print!("{header}");
                    let mut clock = 0i64;
                    for (at, text) in steps {
                        let wait = ((at - clock).max(0) as f64 / speed) as u64;
                        std::thread::sleep(std::time::Duration::from_micros(wait));
                        clock = at;
                        print!("{text}");
                        std::io::stdout().flush()?;
                    }
                    print!("{footer}");
                }
            }
            Ok(())
        }
        Command::Token => {
            let token = airlock::admin::new_token();
            let hash = airlock::admin::token_hash(&token);
            println!("token:        {token}");
            println!("token_sha256: {}", airlock::audit::record::hex(&hash));
            Ok(())
        }
        Command::Approvals { url, json, command } => {
            let token = std::env::var("AIRLOCK_TOKEN").context(
                "set AIRLOCK_TOKEN to your approver token (it is never taken as an argument, \
                 so it stays out of shell history)",
            )?;
            let client = airlock::admin::client::Client { url, token };
            let (value, human) = match command {
                ApprovalsCommand::List { state } => {
                    let v = client.list(state.as_deref())?;
                    let text = airlock::admin::client::render_list(&v);
                    (v, text)
                }
                ApprovalsCommand::Show { id } => {
                    let v = client.show(id)?;
                    let text = airlock::admin::client::render_ticket(&v);
                    (v, text)
                }
                ApprovalsCommand::Approve { id, scope } => {
                    let v = client.approve(id, &scope)?;
                    let state = v["ticket"]["state"].as_str().unwrap_or("").to_owned();
                    (v, format!("ticket {id}: {state}\n"))
                }
                ApprovalsCommand::Deny { id, reason } => {
                    let v = client.deny(id, &reason)?;
                    (v, format!("ticket {id}: denied\n"))
                }
            };
            if json {
                println!("{value}");
            } else {
                print!("{human}");
            }
            Ok(())
        }
        Command::DevCert { out_dir, hosts } => {
            let (cert, key) = airlock::net::tls::dev_cert(&hosts)?;
            std::fs::create_dir_all(&out_dir)
                .with_context(|| format!("cannot create {}", out_dir.display()))?;
            let cert_path = out_dir.join("cert.pem");
            let key_path = out_dir.join("key.pem");
            std::fs::write(&cert_path, cert)?;
            write_private(&key_path, key.as_bytes())?;
            println!("wrote {} and {}", cert_path.display(), key_path.display());
            Ok(())
        }
    }
}

/// The `*.toml` files of a policy directory, as (name, text).
fn read_password() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("password (input is echoed; pipe it in to avoid that): ");
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\n', '\r']).to_owned();
    anyhow::ensure!(
        !password.is_empty(),
        "empty password: type one, or pipe it in with printf '%s' \"$PW\" | airlock passwd"
    );
    Ok(password)
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}

fn read_signer(path: &std::path::Path) -> anyhow::Result<airlock::audit::checkpoint::Signer> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(airlock::audit::checkpoint::Signer::from_pkcs8(&bytes)?)
}
