//! Packets: a 3-byte little-endian payload length, a sequence id, the payload. A payload of
//! 0xFFFFFF bytes or more is sent as several packets, each full one followed by the next
//! (ending with a shorter one, possibly empty): one logical packet.

use std::borrow::Cow;

use bytes::{BufMut, BytesMut};

pub const HEADER_LEN: usize = 4;
/// The largest payload of one physical packet.
pub const MAX_CHUNK: usize = 0xFF_FFFF;

/// A physical packet's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub len: usize,
    pub seq: u8,
}

/// The header at the start of `buf`, if it holds four bytes.
pub fn header(buf: &[u8]) -> Option<Header> {
    let h = buf.get(..HEADER_LEN)?;
    Some(Header {
        len: u32::from_le_bytes([h[0], h[1], h[2], 0]) as usize,
        seq: h[3],
    })
}

/// A whole logical packet at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Logical<'a> {
    pub payload: Cow<'a, [u8]>,
    /// Bytes of the buffer it spans, headers included.
    pub wire_len: usize,
    /// Sequence id of its last physical packet.
    pub last_seq: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("packet of {len} bytes or more is larger than the {max}-byte limit")]
pub struct TooLarge {
    pub len: usize,
    pub max: usize,
}

/// What the start of a buffer holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<'a> {
    /// A whole logical packet.
    Packet(Logical<'a>),
    /// Not all of it yet: at least `need` bytes in all are needed.
    More { need: usize },
}

/// Reads the logical packet at the start of `buf`, refusing payloads over `max` bytes.
pub fn logical(buf: &[u8], max: usize) -> Result<Next<'_>, TooLarge> {
    let mut at = 0;
    let mut joined: Option<Vec<u8>> = None;
    let mut total = 0;
    loop {
        let Some(h) = header(&buf[at..]) else {
            return Ok(Next::More {
                need: at + HEADER_LEN,
            });
        };
        total += h.len;
        if total > max {
            return Err(TooLarge { len: total, max });
        }
        let end = at + HEADER_LEN + h.len;
        if buf.len() < end {
            return Ok(Next::More { need: end });
        }
        let chunk = &buf[at + HEADER_LEN..end];
        if h.len < MAX_CHUNK {
            let payload = match joined {
                None => Cow::Borrowed(chunk),
                Some(mut v) => {
                    v.extend_from_slice(chunk);
                    Cow::Owned(v)
                }
            };
            return Ok(Next::Packet(Logical {
                payload,
                wire_len: end,
                last_seq: h.seq,
            }));
        }
        joined.get_or_insert_with(Vec::new).extend_from_slice(chunk);
        at = end;
    }
}

/// Appends `payload` as packets starting at sequence id `seq`; returns the last id used.
pub fn put(out: &mut BytesMut, mut seq: u8, payload: &[u8]) -> u8 {
    let mut rest = payload;
    loop {
        let n = rest.len().min(MAX_CHUNK);
        out.put_slice(&(n as u32).to_le_bytes()[..3]);
        out.put_u8(seq);
        out.put_slice(&rest[..n]);
        rest = &rest[n..];
        if n < MAX_CHUNK {
            return seq;
        }
        seq = seq.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_packets_round_trip() {
        let mut out = BytesMut::new();
        assert_eq!(put(&mut out, 3, b"\x03select 1"), 3);
        assert_eq!(&out[..4], &[9, 0, 0, 3]);
        let Ok(Next::Packet(p)) = logical(&out, 100) else {
            panic!("whole")
        };
        assert_eq!(&*p.payload, b"\x03select 1");
        assert_eq!((p.wire_len, p.last_seq), (13, 3));
        assert_eq!(logical(&out[..7], 100), Ok(Next::More { need: 13 }));
        assert_eq!(logical(&out[..2], 100), Ok(Next::More { need: 4 }));
        assert!(logical(&out, 5).is_err());
    }

    #[test]
    fn payloads_of_16_mib_and_more_are_split_and_joined() {
        for len in [MAX_CHUNK - 1, MAX_CHUNK, MAX_CHUNK + 7, 2 * MAX_CHUNK] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut out = BytesMut::new();
            let last = put(&mut out, 0, &payload);
            assert_eq!(last as usize, len / MAX_CHUNK, "{len}");
            let Ok(Next::Packet(p)) = logical(&out, 1 << 26) else {
                panic!("whole")
            };
            assert_eq!(p.payload.len(), len);
            assert!(*p.payload == payload[..]);
            assert_eq!(p.wire_len, out.len());
            let cut = out.len() - 1;
            assert!(matches!(
                logical(&out[..cut], 1 << 26),
                Ok(Next::More { .. })
            ));
        }
    }
}
