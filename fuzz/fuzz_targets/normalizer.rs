//! The capture normalizer's decoders on arbitrary frames: every link type,
//! and the options walker. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sustain_conformance::capture::LinkType;
use sustain_conformance::options;
use sustain_conformance::segment::Segment;

fuzz_target!(|data: &[u8]| {
    for link in [LinkType::Ethernet, LinkType::LinuxSll, LinkType::RawIp] {
        if let Some(segment) = Segment::decode(link, data) {
            let _ = options::decode(&segment.options);
            let _ = segment.flag_letters();
        }
    }
    let _ = options::decode(data);
});
