//! Reading captures (classic pcap and pcapng, any timestamp resolution) and writing
//! golden excerpts.
//!
//! A golden excerpt is a pcapng file holding the frames of a real capture that matter to
//! the transcript (every frame a transcript line comes from, with a few frames of context
//! around each) with their payloads cut to the headers. The frames left out are not
//! hidden: the next kept frame carries a packet comment, shown by Wireshark, such as
//!
//! ```text
//! sustain-elided: 11580 frames; data 198.51.100.10:40001>192.0.2.10:5001 11578 end 16777217
//! ```
//!
//! i.e. how many frames were left out and, per direction, how many data segments and the
//! highest sequence number they reached. Reading the excerpt feeds those counts back, so
//! an excerpt gives the same transcript as the capture it was cut from.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read};
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::{Block, PcapNgReader, PcapNgWriter};
use pcap_file::DataLink;
use sustain_core::wire::{Ipv4Packet, TcpPacket, PROTOCOL_TCP};

use crate::error::{io_error, ConformanceError, Result};

/// The comment prefix of an elision record in a golden excerpt.
pub const ELIDED_PREFIX: &str = "sustain-elided:";

/// How frames start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkType {
    Ethernet,
    /// Linux cooked capture v1 (`tcpdump -i any`).
    LinuxSll,
    /// Raw IP (the IP header first).
    RawIp,
}

impl LinkType {
    fn from_datalink(datalink: DataLink) -> Option<LinkType> {
        match datalink {
            DataLink::ETHERNET => Some(LinkType::Ethernet),
            DataLink::LINUX_SLL => Some(LinkType::LinuxSll),
            DataLink::RAW | DataLink::IPV4 => Some(LinkType::RawIp),
            _ => None,
        }
    }

    fn datalink(self) -> DataLink {
        match self {
            LinkType::Ethernet => DataLink::ETHERNET,
            LinkType::LinuxSll => DataLink::LINUX_SLL,
            LinkType::RawIp => DataLink::RAW,
        }
    }

    /// The bytes before the IPv4 header, if this frame carries IPv4.
    pub fn ipv4_offset(self, frame: &[u8]) -> Option<usize> {
        match self {
            LinkType::Ethernet => {
                let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
                match ethertype {
                    0x0800 => Some(14),
                    // One 802.1Q tag.
                    0x8100 => {
                        let inner = u16::from_be_bytes([*frame.get(16)?, *frame.get(17)?]);
                        (inner == 0x0800).then_some(18)
                    }
                    _ => None,
                }
            }
            LinkType::LinuxSll => {
                let protocol = u16::from_be_bytes([*frame.get(14)?, *frame.get(15)?]);
                (protocol == 0x0800).then_some(16)
            }
            LinkType::RawIp => (frame.first()? >> 4 == 4).then_some(0),
        }
    }
}

/// Data segments of one direction that an excerpt left out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElidedData {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub segments: u64,
    /// Highest sequence number (seq + length) they reached, raw.
    pub end: u32,
}

/// What an excerpt left out just before a frame.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Elision {
    pub frames: u64,
    pub data: Vec<ElidedData>,
}

impl Elision {
    /// The packet comment recording this elision.
    pub fn to_comment(&self) -> String {
        let mut text = format!("{ELIDED_PREFIX} {} frames", self.frames);
        for data in &self.data {
            text.push_str(&format!(
                "; data {}>{} {} end {}",
                data.src, data.dst, data.segments, data.end
            ));
        }
        text
    }

    /// Parses [`Elision::to_comment`]'s output; `None` for any other comment.
    pub fn from_comment(comment: &str) -> Option<Elision> {
        let rest = comment.strip_prefix(ELIDED_PREFIX)?.trim();
        let mut parts = rest.split(';').map(str::trim);
        let frames = parts.next()?.strip_suffix(" frames")?.parse().ok()?;
        let mut data = Vec::new();
        for part in parts {
            let mut words = part.split_whitespace();
            if words.next()? != "data" {
                return None;
            }
            let (src, dst) = words.next()?.split_once('>')?;
            let segments = words.next()?.parse().ok()?;
            if words.next()? != "end" {
                return None;
            }
            let end = words.next()?.parse().ok()?;
            data.push(ElidedData {
                src: src.parse().ok()?,
                dst: dst.parse().ok()?,
                segments,
                end,
            });
        }
        Some(Elision { frames, data })
    }
}

/// One captured frame.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Nanoseconds since the Unix epoch (the kernel's capture timestamp).
    pub timestamp_ns: u64,
    /// The frame as captured (possibly cut: see `original_len`).
    pub data: Vec<u8>,
    pub original_len: u32,
    /// In a golden excerpt: what was left out just before this frame.
    pub elided: Option<Elision>,
}

/// One capture point: a pcap or pcapng file, by its name.
#[derive(Clone, Debug)]
pub struct Capture {
    /// The capture point: the file name without extension (`a-g1`).
    pub name: String,
    pub path: PathBuf,
    pub link: LinkType,
    pub frames: Vec<Frame>,
}

/// The capture point's name of a file: `a-g1.pcap` and `a-g1.pcapng` are both `a-g1`.
pub fn capture_point(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .map(|n| {
            n.trim_end_matches(".pcapng")
                .trim_end_matches(".pcap")
                .to_string()
        })
        .unwrap_or_default()
}

/// The pcap and pcapng files of a directory, sorted by name.
pub fn capture_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_error(dir))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.extension()
                .is_some_and(|ext| ext == "pcap" || ext == "pcapng")
        })
        .collect();
    files.sort();
    Ok(files)
}

impl Capture {
    /// Reads a classic pcap or a pcapng file (told apart by the magic number).
    pub fn read(path: &Path) -> Result<Capture> {
        let mut file = BufReader::new(File::open(path).map_err(io_error(path))?);
        let mut magic = [0u8; 4];
        file.read_exact(&mut magic).map_err(io_error(path))?;
        let reader = std::io::Cursor::new(magic).chain(file);
        let name = capture_point(path);
        if magic == [0x0a, 0x0d, 0x0d, 0x0a] {
            read_pcapng(path, name, reader)
        } else {
            read_pcap(path, name, reader)
        }
    }

    /// Writes the frames whose `keep` is true as a golden excerpt (pcapng, payloads cut
    /// after the TCP header, an elision comment before every gap). `elided_before(i)`
    /// gives the record of the frames left out before kept frame `i` (keep the last
    /// frame: nothing records frames left out after it).
    pub fn write_excerpt(
        &self,
        path: &Path,
        keep: &[bool],
        elisions: &dyn Fn(usize) -> Option<Elision>,
    ) -> Result<()> {
        let write_err = |reason: String| ConformanceError::Write {
            path: path.to_path_buf(),
            reason,
        };
        let file = BufWriter::new(File::create(path).map_err(io_error(path))?);
        let mut writer = PcapNgWriter::new(file).map_err(|e| write_err(e.to_string()))?;
        let interface = InterfaceDescriptionBlock {
            linktype: self.link.datalink(),
            snaplen: 0,
            options: vec![
                InterfaceDescriptionOption::IfName(Cow::Owned(self.name.clone())),
                // Nanoseconds, as the lab captures them.
                InterfaceDescriptionOption::IfTsResol(9),
            ],
        };
        writer
            .write_pcapng_block(interface)
            .map_err(|e| write_err(e.to_string()))?;
        for (index, frame) in self.frames.iter().enumerate() {
            if !keep.get(index).copied().unwrap_or(false) {
                continue;
            }
            let cut = headers_len(self.link, &frame.data).unwrap_or(frame.data.len());
            let mut options = Vec::new();
            if let Some(elision) = elisions(index) {
                options.push(EnhancedPacketOption::Comment(Cow::Owned(
                    elision.to_comment(),
                )));
            }
            let block = EnhancedPacketBlock {
                interface_id: 0,
                timestamp: Duration::from_nanos(frame.timestamp_ns),
                original_len: frame.original_len,
                data: Cow::Borrowed(&frame.data[..cut.min(frame.data.len())]),
                options,
            };
            writer
                .write_pcapng_block(block)
                .map_err(|e| write_err(e.to_string()))?;
        }
        let mut file = writer.into_inner();
        std::io::Write::flush(&mut file).map_err(io_error(path))?;
        Ok(())
    }
}

/// Link, IPv4 and TCP headers of a frame, if it is IPv4/TCP; other frames are kept whole.
fn headers_len(link: LinkType, frame: &[u8]) -> Option<usize> {
    let ip_at = link.ipv4_offset(frame)?;
    let ip = Ipv4Packet::new_captured(frame.get(ip_at..)?).ok()?;
    if ip.protocol() != PROTOCOL_TCP {
        return None;
    }
    let tcp_at = ip_at + ip.header_len();
    let tcp = TcpPacket::new_captured(frame.get(tcp_at..)?).ok()?;
    Some(tcp_at + tcp.header_len())
}

fn read_pcap(path: &Path, name: String, reader: impl Read) -> Result<Capture> {
    let mut pcap = PcapReader::new(reader).map_err(|e| ConformanceError::NotACapture {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let datalink = pcap.header().datalink;
    let link =
        LinkType::from_datalink(datalink).ok_or_else(|| ConformanceError::UnsupportedLinkType {
            path: path.to_path_buf(),
            linktype: format!("{datalink:?}"),
        })?;
    let mut frames = Vec::new();
    while let Some(packet) = pcap.next_packet() {
        let packet = packet.map_err(|e| ConformanceError::BadFrame {
            path: path.to_path_buf(),
            index: frames.len(),
            reason: e.to_string(),
        })?;
        frames.push(Frame {
            timestamp_ns: u64::try_from(packet.timestamp.as_nanos()).unwrap_or(u64::MAX),
            original_len: packet.orig_len,
            data: packet.data.into_owned(),
            elided: None,
        });
    }
    Ok(Capture {
        name,
        path: path.to_path_buf(),
        link,
        frames,
    })
}

/// Nanoseconds per unit of an interface's `if_tsresol` (pcapng §4.2): 10^-n or 2^-n
/// seconds; microseconds when absent.
fn tsresol_ns(interface: &InterfaceDescriptionBlock<'_>) -> f64 {
    let resolution = interface
        .options
        .iter()
        .find_map(|option| match option {
            InterfaceDescriptionOption::IfTsResol(r) => Some(*r),
            _ => None,
        })
        .unwrap_or(6);
    let seconds = if resolution & 0x80 == 0 {
        10f64.powi(-i32::from(resolution))
    } else {
        2f64.powi(-i32::from(resolution & 0x7f))
    };
    seconds * 1e9
}

fn read_pcapng(path: &Path, name: String, reader: impl Read) -> Result<Capture> {
    let not_capture = |reason: String| ConformanceError::NotACapture {
        path: path.to_path_buf(),
        reason,
    };
    let mut pcapng = PcapNgReader::new(reader).map_err(|e| not_capture(e.to_string()))?;
    let mut link = None;
    // Nanoseconds per timestamp unit, per interface in order of description.
    let mut resolutions: Vec<f64> = Vec::new();
    let mut frames = Vec::new();
    while let Some(block) = pcapng.next_block() {
        let block = block.map_err(|e| ConformanceError::BadFrame {
            path: path.to_path_buf(),
            index: frames.len(),
            reason: e.to_string(),
        })?;
        match block {
            Block::InterfaceDescription(interface) => {
                let this = LinkType::from_datalink(interface.linktype).ok_or_else(|| {
                    ConformanceError::UnsupportedLinkType {
                        path: path.to_path_buf(),
                        linktype: format!("{:?}", interface.linktype),
                    }
                })?;
                if link.is_some_and(|l| l != this) {
                    return Err(not_capture(
                        "interfaces of different link types in one file".into(),
                    ));
                }
                link = Some(this);
                resolutions.push(tsresol_ns(&interface));
            }
            Block::EnhancedPacket(packet) => {
                let resolution = resolutions.get(packet.interface_id as usize);
                let Some(&resolution) = resolution else {
                    return Err(ConformanceError::BadFrame {
                        path: path.to_path_buf(),
                        index: frames.len(),
                        reason: format!("no interface {}", packet.interface_id),
                    });
                };
                // pcap-file hands over the raw timestamp units as nanoseconds.
                let units = packet.timestamp.as_nanos() as f64;
                let timestamp_ns = (units * resolution).round() as u64;
                let elided = packet.options.iter().find_map(|option| match option {
                    EnhancedPacketOption::Comment(text) => Elision::from_comment(text),
                    _ => None,
                });
                frames.push(Frame {
                    timestamp_ns,
                    original_len: packet.original_len,
                    data: packet.data.into_owned(),
                    elided,
                });
            }
            Block::SimplePacket(packet) => frames.push(Frame {
                timestamp_ns: 0,
                original_len: packet.original_len,
                data: packet.data.into_owned(),
                elided: None,
            }),
            _ => {}
        }
    }
    Ok(Capture {
        name,
        path: path.to_path_buf(),
        link: link.unwrap_or(LinkType::Ethernet),
        frames,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elision_comments_round_trip_and_others_are_not_elisions() {
        let elision = Elision {
            frames: 12,
            data: vec![ElidedData {
                src: "198.51.100.10:40001".parse().unwrap(),
                dst: "192.0.2.10:5001".parse().unwrap(),
                segments: 10,
                end: 4_000_000_000,
            }],
        };
        let text = elision.to_comment();
        assert_eq!(
            text,
            "sustain-elided: 12 frames; data 198.51.100.10:40001>192.0.2.10:5001 10 end 4000000000"
        );
        assert_eq!(Elision::from_comment(&text), Some(elision));
        assert_eq!(Elision::from_comment("a note"), None);
        assert_eq!(Elision::from_comment("sustain-elided: x frames"), None);
        assert_eq!(
            Elision::from_comment("sustain-elided: 3 frames; data 1.2.3.4:5>6.7.8.9:10 2 end"),
            None
        );
    }

    #[test]
    fn capture_points_drop_either_extension() {
        assert_eq!(capture_point(Path::new("/x/a-g1.pcap")), "a-g1");
        assert_eq!(capture_point(Path::new("b-home1-2.pcapng")), "b-home1-2");
    }
}
