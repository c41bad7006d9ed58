//! Splitting a byte stream into messages: a 1-byte tag and a 4-byte big-endian length that
//! counts itself but not the tag ([Message Formats]). Nothing here copies or decodes a body.
//!
//! [Message Formats]: https://www.postgresql.org/docs/current/protocol-message-formats.html

/// Bytes before a message body: the tag and the length.
pub const HEADER_LEN: usize = 5;

/// A message's tag and its total size on the wire, tag included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub tag: u8,
    pub total_len: usize,
}

impl Header {
    pub fn body_len(&self) -> usize {
        self.total_len - HEADER_LEN
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("invalid length {len} in message of type {:?}", *tag as char)]
    BadLength { tag: u8, len: i64 },
    #[error("message of type {:?} is {len} bytes, more than the limit of {max}", *tag as char)]
    TooLarge { tag: u8, len: usize, max: usize },
}

/// Reads the header at the start of `buf`: `Ok(None)` when fewer than five bytes are there.
/// `max` bounds the total size; a length that is negative or below 4 is an error.
#[inline]
pub fn header(buf: &[u8], max: usize) -> Result<Option<Header>, FrameError> {
    let Some(h) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let tag = h[0];
    let len = i32::from_be_bytes([h[1], h[2], h[3], h[4]]);
    if len < 4 {
        return Err(FrameError::BadLength {
            tag,
            len: len.into(),
        });
    }
    let total_len = len as usize + 1;
    if total_len > max {
        return Err(FrameError::TooLarge {
            tag,
            len: total_len,
            max,
        });
    }
    Ok(Some(Header { tag, total_len }))
}

/// Reads the header of a whole message at the start of `buf`: `Ok(None)` until all of it is there.
#[inline]
pub fn complete(buf: &[u8], max: usize) -> Result<Option<Header>, FrameError> {
    match header(buf, max)? {
        Some(h) if buf.len() >= h.total_len => Ok(Some(h)),
        _ => Ok(None),
    }
}

/// Appends a message with `tag` and `body` to `out`.
pub fn put_message(out: &mut bytes::BytesMut, tag: u8, body: &[u8]) {
    use bytes::BufMut;
    out.reserve(HEADER_LEN + body.len());
    out.put_u8(tag);
    out.put_i32((body.len() + 4) as i32);
    out.put_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_five_bytes_for_a_header() {
        assert_eq!(header(b"Q\0\0\0", 100), Ok(None));
        assert_eq!(
            header(b"Q\0\0\0\x05", 100),
            Ok(Some(Header {
                tag: b'Q',
                total_len: 6
            }))
        );
    }

    #[test]
    fn complete_waits_for_the_body() {
        assert_eq!(complete(b"Q\0\0\0\x06a", 100), Ok(None));
        assert_eq!(
            complete(b"Q\0\0\0\x06a\0extra", 100),
            Ok(Some(Header {
                tag: b'Q',
                total_len: 7
            }))
        );
    }

    #[test]
    fn refuses_short_negative_and_oversized_lengths() {
        assert!(matches!(
            header(b"Q\0\0\0\x03", 100),
            Err(FrameError::BadLength { .. })
        ));
        assert!(matches!(
            header(b"Q\xff\xff\xff\xff", 100),
            Err(FrameError::BadLength { .. })
        ));
        assert!(matches!(
            header(b"Q\0\0\x01\0", 100),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn put_message_round_trips() {
        let mut out = bytes::BytesMut::new();
        put_message(&mut out, b'Q', b"select 1\0");
        let h = complete(&out, 1 << 20).unwrap().unwrap();
        assert_eq!(h.tag, b'Q');
        assert_eq!(h.total_len, out.len());
        assert_eq!(&out[HEADER_LEN..], b"select 1\0");
    }
}
