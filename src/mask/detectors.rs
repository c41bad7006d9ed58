//! The built-in detectors: a name (what the placeholder says), the literal anchors a value
//! must contain for the detector to look at it (the prefilter), and the pattern. A pattern
//! with a capture group masks only that group (the password in a URL, the value after
//! `password=`); otherwise the whole match.

/// A detector as written here, before compiling.
pub struct Spec {
    pub name: &'static str,
    /// Literal text every match contains, as written (ASCII).
    pub anchors: &'static [&'static str],
    /// The pattern ignores case: the anchors are written in lower case and the prefilter
    /// also looks for them in upper and title case (`key` finds `KEY` and the `Key` of
    /// `apiKey`; a mixed case such as `kEy` is not looked for).
    pub any_case: bool,
    pub pattern: &'static str,
    /// The masked part must look random (Shannon entropy at least this many bits per byte);
    /// 0 for formats that are secrets by their shape alone.
    pub min_entropy: f64,
}

pub const BUILT_IN: &[Spec] = &[
    Spec {
        name: "aws_access_key_id",
        anchors: &[
            "AKIA", "ASIA", "AGPA", "AIDA", "AROA", "ANPA", "ANVA", "AIPA",
        ],
        any_case: false,
        pattern: r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b",
        min_entropy: 0.0,
    },
    Spec {
        name: "aws_secret_access_key",
        anchors: &["aws"],
        any_case: true,
        pattern: r#"(?i)aws[a-z_\-. ]{0,20}(?:secret|private)[a-z_\-. ]{0,20}["']?\s*[:=]\s*["']?([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$)"#,
        min_entropy: 3.0,
    },
    Spec {
        name: "gcp_api_key",
        anchors: &["AIza"],
        any_case: false,
        pattern: r"\bAIza[0-9A-Za-z_\-]{35}",
        min_entropy: 0.0,
    },
    Spec {
        name: "gcp_service_account_key_id",
        anchors: &["private_key_id"],
        any_case: false,
        pattern: r#""private_key_id"\s*:\s*"([0-9a-f]{40})""#,
        min_entropy: 0.0,
    },
    Spec {
        name: "azure_connection_string",
        anchors: &["key=", "signature="],
        any_case: true,
        pattern: r"(?i)\b(?:AccountKey|SharedAccessKey|SharedAccessSignature)=([A-Za-z0-9+/=%&:\-]{20,})",
        min_entropy: 0.0,
    },
    Spec {
        name: "github_token",
        anchors: &["ghp_", "gho_", "ghs_", "ghu_", "ghr_", "github_pat_"],
        any_case: false,
        pattern: r"\b(?:(?:ghp|gho|ghs|ghu|ghr)_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{82})\b",
        min_entropy: 0.0,
    },
    Spec {
        name: "gitlab_token",
        anchors: &["glpat-"],
        any_case: false,
        pattern: r"\bglpat-[A-Za-z0-9_\-]{20,}",
        min_entropy: 0.0,
    },
    Spec {
        name: "slack_token",
        anchors: &["xoxa-", "xoxb-", "xoxp-", "xoxo-", "xoxs-", "xoxr-"],
        any_case: false,
        pattern: r"\bxox[abposr]-[A-Za-z0-9\-]{10,}",
        min_entropy: 0.0,
    },
    Spec {
        name: "stripe_key",
        anchors: &["sk_live_", "rk_live_"],
        any_case: false,
        pattern: r"\b(?:sk|rk)_live_[A-Za-z0-9]{24,}\b",
        min_entropy: 0.0,
    },
    Spec {
        name: "jwt",
        anchors: &["eyJ"],
        any_case: false,
        pattern: r"\beyJ[A-Za-z0-9_\-]{5,}\.eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{10,}",
        min_entropy: 0.0,
    },
    Spec {
        name: "private_key",
        anchors: &["-----BEGIN"],
        any_case: false,
        pattern: r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY( BLOCK)?-----[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY( BLOCK)?-----",
        min_entropy: 0.0,
    },
    Spec {
        name: "url_password",
        anchors: &["://"],
        any_case: false,
        pattern: r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]+:([^/\s@]+)@",
        min_entropy: 0.0,
    },
    Spec {
        name: "password_hash",
        anchors: &[
            "$2a$",
            "$2b$",
            "$2y$",
            "$argon2",
            "$scrypt$",
            "SCRAM-SHA-256$",
        ],
        any_case: false,
        pattern: r"\$2[aby]\$\d{2}\$[./A-Za-z0-9]{53}|\$argon2(?:id|i|d)\$v=\d+\$m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+|\$scrypt\$[A-Za-z0-9$+/.=,]{20,}|SCRAM-SHA-256\$\d+:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+",
        min_entropy: 0.0,
    },
    Spec {
        name: "secret_assignment",
        anchors: &["pass", "pwd", "secret", "token", "key"],
        any_case: true,
        pattern: r#"(?i)\b[a-z0-9_\-]*(?:password|passwd|pwd|secret|token|api[_\-]?key|access[_\-]?key|auth[_\-]?key|private[_\-]?key)["']?\s*[:=]\s*["']?([^\s"'&,;<>\\]{12,})"#,
        min_entropy: 3.5,
    },
];
