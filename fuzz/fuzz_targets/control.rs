//! The control protocols on arbitrary bytes: the host <-> server stream
//! (PROTOCOL.md §15) fed to its framer in arbitrary pieces and each frame
//! parsed, and the server <-> proxy session's framing and messages
//! (§15.14), with and without a session key. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sustain_core::control::{FrameBuffer, Incoming};
use sustain_core::relay::control::{split, ProxyMessage, SessionKey};
use sustain_core::relay::RelaySecret;

fuzz_target!(|data: &[u8]| {
    // The first byte chooses how the stream is cut into reads.
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let step = usize::from(cut).max(1);
    let mut frames = FrameBuffer::default();
    'host: for piece in stream.chunks(step) {
        frames.push(piece);
        loop {
            match frames.next_frame() {
                Ok(Some(frame)) => {
                    let _ = Incoming::parse(&frame);
                }
                Ok(None) => break,
                Err(_) => break 'host,
            }
        }
    }

    let key = SessionKey::derive(&RelaySecret::new([7; 32]), &[1; 8], &[2; 8]);
    let mut rest = stream;
    while let Ok(Some(len)) = split(rest) {
        let Some(message) = rest.get(..len) else {
            break;
        };
        let _ = ProxyMessage::parse(message, None);
        let _ = ProxyMessage::parse(message, Some(&key));
        rest = &rest[len..];
        if len == 0 {
            break;
        }
    }
});
