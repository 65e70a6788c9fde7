//! Following the frames of one direction of a WebSocket by their headers alone: where each
//! frame ends and whether it carries data. Payloads are never read, unmasked or copied, so
//! this costs a few comparisons per frame and nothing per payload byte. The tunnel uses it
//! to know when a client last sent data (pings, pongs and closes are not activity) and
//! where it may put a close frame of its own into the backend's stream (RFC 6455 §5.4:
//! control frames may come between the fragments of a message, never inside a frame).

/// Where one direction of a WebSocket stands.
#[derive(Debug, Default)]
pub(crate) struct Frames {
    /// Payload bytes of the current frame still to come.
    left: u64,
    /// The header being read, when one is split across reads (at most 14 bytes).
    head: [u8; 14],
    head_len: u8,
}

/// A server's close frame: `code` and `reason`, cut to the 123 bytes a control frame can
/// carry (at a character boundary).
pub(crate) fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason.as_bytes()[..end];
    let mut frame = Vec::with_capacity(4 + reason.len());
    // FIN and opcode 8 (close); unmasked, as a server's frames are.
    frame.extend_from_slice(&[0x88, 2 + reason.len() as u8]);
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(reason);
    frame
}

impl Frames {
    /// Between two frames: a frame of the proxy's own may go here.
    pub(crate) fn at_boundary(&self) -> bool {
        self.left == 0 && self.head_len == 0
    }

    /// Follows `bytes`; true if the header of a data frame (not ping, pong or close) was
    /// among them.
    pub(crate) fn scan(&mut self, bytes: &[u8]) -> bool {
        self.walk(bytes, false).1
    }

    /// Follows `bytes` up to the first frame boundary and says how many it took: all of
    /// them if none falls among them, 0 if at one already.
    pub(crate) fn scan_to_boundary(&mut self, bytes: &[u8]) -> usize {
        self.walk(bytes, true).0
    }

    fn walk(&mut self, bytes: &[u8], stop_at_boundary: bool) -> (usize, bool) {
        let mut i = 0;
        let mut data = false;
        loop {
            if stop_at_boundary && self.at_boundary() {
                return (i, data);
            }
            if i == bytes.len() {
                return (i, data);
            }
            if self.left > 0 {
                let n = self.left.min((bytes.len() - i) as u64);
                self.left -= n;
                i += n as usize;
                continue;
            }
            self.head[self.head_len as usize] = bytes[i];
            self.head_len += 1;
            i += 1;
            if let Some((opcode, len)) = self.header() {
                data |= opcode & 0x8 == 0;
                self.left = len;
                self.head_len = 0;
            }
        }
    }

    /// The opcode and payload length of the header read so far, once it is complete.
    fn header(&self) -> Option<(u8, u64)> {
        let h = &self.head[..self.head_len as usize];
        if h.len() < 2 {
            return None;
        }
        let ext = match h[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if h[1] & 0x80 != 0 { 4 } else { 0 };
        if h.len() < 2 + ext + mask {
            return None;
        }
        let len = match ext {
            0 => u64::from(h[1] & 0x7f),
            2 => u64::from(u16::from_be_bytes([h[2], h[3]])),
            _ => u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
        };
        Some((h[0] & 0x0f, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame as a client sends it (masked) or a server (unmasked).
    fn frame(opcode: u8, payload_len: usize, masked: bool) -> Vec<u8> {
        let mut f = vec![0x80 | opcode];
        let m = if masked { 0x80 } else { 0 };
        match payload_len {
            0..=125 => f.push(m | payload_len as u8),
            126..=65535 => {
                f.push(m | 126);
                f.extend_from_slice(&(payload_len as u16).to_be_bytes());
            }
            _ => {
                f.push(m | 127);
                f.extend_from_slice(&(payload_len as u64).to_be_bytes());
            }
        }
        if masked {
            f.extend_from_slice(&[1, 2, 3, 4]);
        }
        f.extend(std::iter::repeat_n(0x81u8, payload_len));
        f
    }

    #[test]
    fn data_frames_count_and_control_frames_do_not() {
        let mut f = Frames::default();
        assert!(!f.scan(&frame(0xA, 4, true)), "a pong is not activity");
        assert!(!f.scan(&frame(0x9, 0, true)), "nor a ping");
        assert!(f.scan(&frame(0x1, 5, true)), "a text frame is");
        assert!(f.scan(&frame(0x2, 70_000, true)), "a binary frame is");
        assert!(f.at_boundary());
    }

    #[test]
    fn headers_and_payloads_split_anywhere_are_followed() {
        let mut stream = frame(0x2, 300, false);
        stream.extend(frame(0x9, 3, false));
        stream.extend(frame(0x0, 70_000, false));
        for split in [1, 2, 3, 4, 5, 150, 303, 304, 305, 309, 1000] {
            let mut f = Frames::default();
            let (a, b) = stream.split_at(split);
            f.scan(a);
            f.scan(b);
            assert!(f.at_boundary(), "split at {split}");
        }
        // Byte by byte too.
        let mut f = Frames::default();
        let mut data = false;
        for b in &stream {
            data |= f.scan(std::slice::from_ref(b));
        }
        assert!(data && f.at_boundary());
    }

    #[test]
    fn scan_to_boundary_stops_where_the_current_frame_ends() {
        let mut stream = frame(0x1, 10, false);
        stream.extend(frame(0x1, 10, false));
        let mut f = Frames::default();
        assert_eq!(f.scan_to_boundary(&stream), 0, "at a boundary already");
        f.scan(&stream[..5]);
        assert!(!f.at_boundary());
        // The rest of the first frame (7 of 12 bytes), then a boundary.
        assert_eq!(f.scan_to_boundary(&stream[5..]), 7);
        assert!(f.at_boundary());
        assert_eq!(f.scan_to_boundary(&stream[12..]), 0);
    }

    #[test]
    fn the_close_frame_is_code_1001_with_the_reason() {
        assert_eq!(
            close_frame(1001, "swept"),
            [0x88, 7, 0x03, 0xE9, b's', b'w', b'e', b'p', b't']
        );
        let long = "é".repeat(100);
        let f = close_frame(1001, &long);
        assert_eq!(f[1] as usize, f.len() - 2);
        assert!(f.len() - 4 <= 123);
        assert!(std::str::from_utf8(&f[4..]).is_ok());
        // A revocation's: 1008 (policy violation).
        assert_eq!(&close_frame(1008, "x")[..], [0x88, 3, 0x03, 0xF0, b'x']);
    }
}
