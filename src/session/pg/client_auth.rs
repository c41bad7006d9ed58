//! Authenticating the client at Airlock: SCRAM-SHA-256 (SCRAM-SHA-256-PLUS with
//! tls-server-end-point channel binding over TLS) against the verifiers in the config, or a
//! cleartext password inside TLS. An unknown user runs the same exchange against a decoy
//! verifier, so the two cannot be told apart. The upstream password is never involved.

use bytes::{Bytes, BytesMut};
use pgwire::messages::startup::Authentication;
use tokio::io::AsyncWriteExt;

use crate::auth::scram::ScramVerifier;
use crate::config::ClientAuthMethod;
use crate::net::stream::Stream;
use crate::protocol::pg::PgError;
use crate::protocol::pg::backend;
use crate::protocol::pg::frontend::tag;
use crate::session::pg::io::{Message, ReadError, Reader};
use crate::session::pg::{PgContext, SessionError};

const SCRAM: &str = "SCRAM-SHA-256";
const SCRAM_PLUS: &str = "SCRAM-SHA-256-PLUS";
/// Password-family messages are small; anything larger is not a real client.
const MAX_AUTH_MESSAGE: usize = 8 * 1024;

/// Runs the exchange. On success `out` holds the last message to send before AuthenticationOk.
pub async fn authenticate(
    ctx: &PgContext,
    client: &mut Stream,
    reader: &mut Reader,
    user: &str,
    out: &mut BytesMut,
) -> Result<(), SessionError> {
    let known = ctx.users.get(user);
    let verifier = known.cloned().unwrap_or_else(|| ctx.decoy.for_user(user));
    let ok = match ctx.client_auth() {
        ClientAuthMethod::ScramSha256 => scram(ctx, client, reader, user, &verifier, out).await?,
        ClientAuthMethod::Password => {
            if !client.is_tls() {
                return Err(PgError::cleartext_needs_tls().into());
            }
            backend::authentication(Authentication::CleartextPassword, out);
            send(client, out).await?;
            let m = read_password_message(client, reader).await?;
            let password = m
                .body()
                .strip_suffix(&[0])
                .and_then(|p| std::str::from_utf8(p).ok())
                .ok_or_else(|| PgError::auth_protocol("malformed password message"))?
                .to_owned();
            // PBKDF2 takes milliseconds: keep it off the thread that relays other sessions.
            let check = tokio::task::spawn_blocking(move || verifier.matches_password(&password));
            check.await.unwrap_or(false)
        }
    };
    if ok && known.is_some() {
        Ok(())
    } else {
        tracing::warn!(
            user,
            known_user = known.is_some(),
            "client authentication failed"
        );
        Err(PgError::password_failed(user).into())
    }
}

/// The SASL exchange. Returns whether the proof matched.
async fn scram(
    ctx: &PgContext,
    client: &mut Stream,
    reader: &mut Reader,
    user: &str,
    verifier: &ScramVerifier,
    out: &mut BytesMut,
) -> Result<bool, SessionError> {
    let plus = ctx.scram_plus.as_ref().filter(|_| client.is_tls());
    let mechanisms = match plus {
        Some(_) => vec![SCRAM_PLUS.to_owned(), SCRAM.to_owned()],
        None => vec![SCRAM.to_owned()],
    };
    backend::authentication(Authentication::SASL(mechanisms), out);
    send(client, out).await?;

    let initial = read_password_message(client, reader).await?;
    let (mechanism, data) = parse_sasl_initial(initial.body())?;
    let server = match (mechanism, plus) {
        (SCRAM_PLUS, Some(server)) => server.clone(),
        // Advertising -PLUS and then seeing plain SCRAM with the "y" flag is a downgrade;
        // pgwire refuses that when the certificate is configured, so keep it configured.
        (SCRAM, Some(server)) if !data.starts_with(b"p=") => server.clone(),
        (SCRAM, None) if !data.starts_with(b"p=") => {
            pgwire::api::auth::sasl::scram::ScramServerAuth::new()
        }
        _ => {
            return Err(
                PgError::auth_protocol("unsupported SASL mechanism or channel binding").into(),
            );
        }
    };
    let (server_first, waiting) = server
        .on_client_first_message_with_secret(data, verifier.to_secret())
        .map_err(|_| PgError::auth_protocol("malformed SCRAM client-first message"))?;
    backend::authentication(Authentication::SASLContinue(Bytes::from(server_first)), out);
    send(client, out).await?;

    let final_message = read_password_message(client, reader).await?;
    match waiting.on_client_final_message(final_message.body()) {
        Ok(server_final) => {
            backend::authentication(Authentication::SASLFinal(Bytes::from(server_final)), out);
            Ok(true)
        }
        Err(pgwire::error::PgWireError::InvalidPassword(_)) => Ok(false),
        Err(_) => {
            tracing::debug!(user, "malformed SCRAM client-final message");
            Ok(false)
        }
    }
}

fn parse_sasl_initial(body: &[u8]) -> Result<(&str, &[u8]), PgError> {
    let malformed = || PgError::auth_protocol("malformed SASLInitialResponse");
    let end = body.iter().position(|&b| b == 0).ok_or_else(malformed)?;
    let mechanism = std::str::from_utf8(&body[..end]).map_err(|_| malformed())?;
    let rest = &body[end + 1..];
    let len_bytes: [u8; 4] = rest
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(malformed)?;
    let len = i32::from_be_bytes(len_bytes);
    let data = &rest[4..];
    if len < 0 || len as usize != data.len() {
        return Err(malformed());
    }
    Ok((mechanism, data))
}

async fn send(client: &mut Stream, out: &mut BytesMut) -> Result<(), SessionError> {
    client.write_all(out).await?;
    client.flush().await?;
    out.clear();
    Ok(())
}

async fn read_password_message(
    client: &mut Stream,
    reader: &mut Reader,
) -> Result<Message, SessionError> {
    let m = reader
        .message(client, MAX_AUTH_MESSAGE)
        .await
        .map_err(|e| match e {
            ReadError::Io(e) => SessionError::Closed(e),
            ReadError::Frame(e) => PgError::protocol_violation(e).into(),
        })?;
    if m.tag != tag::PASSWORD {
        return Err(PgError::auth_protocol(&format!(
            "expected a password message, got message type {:?}",
            m.tag as char
        ))
        .into());
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sasl_initial_response() {
        let mut body = b"SCRAM-SHA-256\0".to_vec();
        body.extend_from_slice(&6i32.to_be_bytes());
        body.extend_from_slice(b"n,,n=");
        assert!(
            parse_sasl_initial(&body).is_err(),
            "length 6 but 5 bytes of data"
        );
        body.push(b'x');
        assert_eq!(
            parse_sasl_initial(&body).unwrap(),
            ("SCRAM-SHA-256", &b"n,,n=x"[..])
        );
        assert!(parse_sasl_initial(b"SCRAM").is_err());
        assert!(parse_sasl_initial(b"SCRAM\0\0\0").is_err());
    }
}
