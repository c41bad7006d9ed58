//! The masking corpus, generated from a fixed seed: for every detector, 200 secrets in its
//! format (every one must be masked), and 12,000 ordinary values (UUIDs, git SHAs, base64
//! images, hex colours, emails, URLs without passwords, English and non-English text,
//! numbers, JSON, paths) of which under 0.1% may be masked. Prints the rates.

use airlock::mask::Masker;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const UPPER_DIGITS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
const HEX: &[u8] = b"0123456789abcdef";
const BCRYPT: &[u8] = b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const PASSWORDISH: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%()*+-./:?@[]^_{|}~";

fn pick(rng: &mut StdRng, alphabet: &[u8], n: usize) -> String {
    (0..n)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect()
}

fn pick_len(rng: &mut StdRng, alphabet: &[u8], len: std::ops::Range<usize>) -> String {
    let n = rng.random_range(len);
    pick(rng, alphabet, n)
}

fn one_of<'a>(rng: &mut StdRng, items: &[&'a str]) -> &'a str {
    items[rng.random_range(0..items.len())]
}

/// A secret of detector `name`'s format, inside some ordinary text around it.
fn secret(rng: &mut StdRng, name: &str) -> String {
    let s = match name {
        "aws_access_key_id" => format!(
            "{}{}",
            one_of(rng, &["AKIA", "ASIA", "AROA", "AIDA"]),
            pick(rng, UPPER_DIGITS, 16)
        ),
        "aws_secret_access_key" => format!(
            "{}{}",
            one_of(
                rng,
                &[
                    "aws_secret_access_key = ",
                    "AWS_SECRET_ACCESS_KEY=",
                    "\"aws_secret_access_key\": \"",
                    "aws secret key: "
                ]
            ),
            pick(rng, BASE64, 40)
        ),
        "gcp_api_key" => format!("AIza{}", pick(rng, URL_SAFE, 35)),
        "gcp_service_account_key_id" => format!(
            "{{\"type\": \"service_account\", \"private_key_id\": \"{}\"}}",
            pick(rng, HEX, 40)
        ),
        "azure_connection_string" => format!(
            "DefaultEndpointsProtocol=https;AccountName=acct{};AccountKey={}==;EndpointSuffix=core.windows.net",
            rng.random_range(0..1000),
            pick(rng, BASE64, 86)
        ),
        "github_token" => match rng.random_range(0..6) {
            0 => format!(
                "github_pat_{}",
                pick(
                    rng,
                    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_",
                    82
                )
            ),
            _ => format!(
                "{}_{}",
                one_of(rng, &["ghp", "gho", "ghs", "ghu", "ghr"]),
                pick(rng, ALNUM, 36)
            ),
        },
        "gitlab_token" => format!("glpat-{}", pick(rng, URL_SAFE, 20)),
        "slack_token" => format!(
            "xox{}-{}-{}-{}",
            one_of(rng, &["b", "p", "a", "s"]),
            pick(rng, b"0123456789", 12),
            pick(rng, b"0123456789", 13),
            pick(rng, ALNUM, 24)
        ),
        "stripe_key" => format!(
            "{}_live_{}",
            one_of(rng, &["sk", "rk"]),
            pick_len(rng, ALNUM, 24..100)
        ),
        "jwt" => format!(
            "eyJ{}.eyJ{}.{}",
            pick_len(rng, URL_SAFE, 20..60),
            pick_len(rng, URL_SAFE, 40..200),
            pick(rng, URL_SAFE, 43)
        ),
        "private_key" => format!(
            "-----BEGIN {}PRIVATE KEY-----\n{}\n{}\n-----END {}PRIVATE KEY-----",
            one_of(rng, &["", "RSA ", "EC ", "OPENSSH ", "ENCRYPTED "]),
            pick(rng, BASE64, 64),
            pick(rng, BASE64, 40),
            ""
        )
        .replace("-----END PRIVATE", "-----END PRIVATE"),
        "url_password" => format!(
            "{}://{}:{}@{}.internal:{}/db",
            one_of(
                rng,
                &["postgres", "mysql", "redis", "amqp", "https", "mongodb+srv"]
            ),
            pick(rng, b"abcdefghijklmnopqrstuvwxyz", 6),
            pick_len(rng, ALNUM, 6..30),
            pick(rng, b"abcdefghijklmnopqrstuvwxyz", 8),
            rng.random_range(1000..9999)
        ),
        "password_hash" => match rng.random_range(0..4) {
            0 => format!(
                "${}${:02}${}",
                one_of(rng, &["2a", "2b", "2y"]),
                rng.random_range(4..15),
                pick(rng, BCRYPT, 53)
            ),
            1 => format!(
                "$argon2id$v=19$m=65536,t=3,p=4${}${}",
                pick(rng, BASE64, 22),
                pick(rng, BASE64, 43)
            ),
            2 => format!(
                "$scrypt$ln=16,r=8,p=1${}${}",
                pick(rng, BASE64, 22),
                pick(rng, BASE64, 43)
            ),
            _ => format!(
                "SCRAM-SHA-256$4096:{}$={}:{}=",
                pick(rng, BASE64, 24),
                pick(rng, BASE64, 43),
                pick(rng, BASE64, 43)
            ),
        },
        "secret_assignment" => format!(
            "{}{}",
            one_of(
                rng,
                &[
                    "password=",
                    "db_password: ",
                    "\"client_secret\": \"",
                    "api_key=",
                    "X_AUTH_TOKEN=",
                    "secret = '",
                    "passwd:",
                    "access_key=",
                    "\"apiKey\": \"",
                    "accessToken=",
                    "Password: ",
                    "DB_PASSWORD="
                ]
            ),
            pick_len(rng, PASSWORDISH, 20..40).replace(['"', '\''], "x")
        ),
        other => panic!("no generator for {other}"),
    };
    let before = one_of(rng, &["", "config: ", "value was ", "{\"v\": \"", "-- "]);
    format!("{before}{s} end")
}

const WORDS: &[&str] = &[
    "the", "order", "shipped", "customer", "invoice", "password", "reset", "token", "secret",
    "garden", "delivery", "account", "balance", "update", "monday", "report", "key", "access",
    "api", "weather", "meeting", "project", "budget", "review", "approved", "database", "login",
    "session", "expired", "please", "contact", "support", "thanks", "for", "your", "patience",
];
const OTHER_LANGUAGES: &[&str] = &[
    "Die Bestellung wurde heute versandt und kommt morgen an.",
    "La contraseña debe cambiarse cada noventa días.",
    "Le mot de passe a été réinitialisé avec succès.",
    "パスワードをリセットしました。ご確認ください。",
    "Заказ отправлен, номер отслеживания придёт по почте.",
    "请在三十天内完成付款，谢谢。",
    "Hesabınızın şifresi değiştirildi.",
    "كلمة المرور قوية بما فيه الكفاية",
];

/// An ordinary value of kind `k`.
fn ordinary(rng: &mut StdRng, k: usize) -> String {
    match k % 12 {
        0 => format!(
            "{}-{}-4{}-a{}-{}",
            pick(rng, HEX, 8),
            pick(rng, HEX, 4),
            pick(rng, HEX, 3),
            pick(rng, HEX, 3),
            pick(rng, HEX, 12)
        ),
        1 => pick(rng, HEX, 40),
        2 => format!("data:image/png;base64,{}", pick_len(rng, BASE64, 100..3000)),
        3 => format!("#{}", pick(rng, HEX, 6)),
        4 => format!(
            "{}.{}@{}",
            pick(rng, b"abcdefghijklmnopqrstuvwxyz", 5),
            pick(rng, b"abcdefghijklmnopqrstuvwxyz", 7),
            one_of(rng, &["example.com", "mail.example.org", "corp.internal"])
        ),
        5 => format!(
            "{}://{}{}/{}?q={}&page={}",
            one_of(rng, &["https", "http", "ssh", "postgres"]),
            one_of(rng, &["", "git@", "deploy@"]),
            one_of(rng, &["example.com", "db.internal:5432", "github.com"]),
            pick(rng, b"abcdefghijklmnopqrstuvwxyz/", 12),
            pick(rng, ALNUM, 8),
            rng.random_range(1..50)
        ),
        6 => (0..rng.random_range(3..25))
            .map(|_| one_of(rng, WORDS))
            .collect::<Vec<_>>()
            .join(" "),
        7 => one_of(rng, OTHER_LANGUAGES).to_owned(),
        8 => match rng.random_range(0..3) {
            0 => rng.random_range(-1_000_000i64..1_000_000).to_string(),
            1 => format!("{:.4}", rng.random_range(-1e6f64..1e6)),
            _ => format!(
                "+1-555-{:03}-{:04}",
                rng.random_range(0..1000),
                rng.random_range(0..10000)
            ),
        },
        9 => format!(
            "{{\"id\": {}, \"status\": \"{}\", \"token_count\": {}, \"password_changed\": true}}",
            rng.random_range(1..100000),
            one_of(rng, &["open", "closed", "pending"]),
            rng.random_range(0..500)
        ),
        10 => format!(
            "/var/lib/app/{}/{}.log",
            pick(rng, b"abcdefghijklmnopqrstuvwxyz", 6),
            rng.random_range(2020..2030)
        ),
        _ => format!(
            "2026-{:02}-{:02}T{:02}:{:02}:{:02}Z request {} took {} ms",
            rng.random_range(1..13),
            rng.random_range(1..29),
            rng.random_range(0..24),
            rng.random_range(0..60),
            rng.random_range(0..60),
            pick(rng, ALNUM, 16),
            rng.random_range(1..900)
        ),
    }
}

#[test]
fn every_secret_is_masked_and_ordinary_values_almost_never() {
    let masker = Masker::built_in();
    let mut rng = StdRng::seed_from_u64(20261125);
    let names = airlock::mask::detectors::BUILT_IN.iter().map(|d| d.name);
    let mut missed = Vec::new();
    let mut total = 0;
    for name in names {
        for _ in 0..200 {
            let s = secret(&mut rng, name);
            total += 1;
            let masked = masker
                .mask(s.as_bytes())
                .map(|m| String::from_utf8(m).unwrap());
            let expected = format!("[masked:{name}]");
            match masked {
                Some(m) if m.contains(&expected) => {}
                other => missed.push(format!("{name}: {s:?} -> {other:?}")),
            }
        }
    }
    let ordinary_count = 12_000;
    let mut false_positives = Vec::new();
    for k in 0..ordinary_count {
        let v = ordinary(&mut rng, k);
        if let Some(m) = masker.mask(v.as_bytes()) {
            false_positives.push(format!("{v:?} -> {:?}", String::from_utf8_lossy(&m)));
        }
    }
    let rate = false_positives.len() as f64 / ordinary_count as f64;
    println!(
        "masking corpus: recall {}/{total}, false positives {}/{ordinary_count} ({:.3}%)",
        total - missed.len(),
        false_positives.len(),
        100.0 * rate
    );
    assert!(
        missed.is_empty(),
        "secrets not masked:\n{}",
        missed.join("\n")
    );
    assert!(
        rate < 0.001,
        "false positive rate {rate} over 0.1%:\n{}",
        false_positives.join("\n")
    );
}
