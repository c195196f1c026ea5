//! The migration stream (given): the typed records source and destination exchange over their
//! Unix socket, and the `Link` that carries them.
//!
//! Every record is a header and a payload: its kind (one byte), the payload's length (u32,
//! little-endian), then the payload, every number in it little-endian:
//!
//! | kind | record      | direction     | payload                                                      |
//! |------|-------------|---------------|--------------------------------------------------------------|
//! | 1    | `Hello`     | source → dest | guest memory size (u64)                                      |
//! | 2    | `Page`      | source → dest | guest physical address (u64), then the page's 4096 bytes     |
//! | 3    | `RoundEnd`  | source → dest | round (u32), pages sent in it (u32)                          |
//! | 4    | `Vcpu`      | source → dest | `kvm_regs`, `kvm_sregs`, `kvm_fpu`, field by field (`VcpuState`) |
//! | 5    | `Resume`    | source → dest | empty: the state is complete, run it                         |
//! | 16   | `Resumed`   | dest → source | empty: the destination enters the guest now                  |
//! | 17   | `Output`    | dest → source | console bytes the guest wrote on the destination             |
//! | 18   | `Finished`  | dest → source | checksum (u64), then six exit counts (u64 each)              |
//! | 19   | `Failed`    | dest → source | exit status (u8), then a UTF-8 message                       |
//!
//! Nothing is negotiated: both ends are the same kvm-hello binary on the same host.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use kvm_bindings::{kvm_dtable, kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use lab4_exit_loop::ExitCounts;

use crate::{PAGE_SIZE, VcpuState};

/// The largest payload a record may announce: a page and its address, with room to spare.
pub const MAX_PAYLOAD: u32 = 64 * 1024;
/// How long either end waits for the other before it gives up (a peer that hangs is a failure).
pub const LINK_TIMEOUT: Duration = Duration::from_secs(20);

// ANCHOR: record
/// One record of the migration stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// The first record: the source's guest memory size (the destination's must match).
    Hello {
        /// Bytes of guest memory.
        memory_size: u64,
    },
    /// One page of guest memory.
    Page {
        /// Its guest physical address (a multiple of `PAGE_SIZE`).
        gpa: u64,
        /// Its `PAGE_SIZE` bytes.
        bytes: Vec<u8>,
    },
    /// The end of a round of pages.
    RoundEnd {
        /// The round, from 1; the stop-and-copy round is the last.
        round: u32,
        /// How many `Page` records it had.
        pages: u32,
    },
    /// The vCPU's state at the stop.
    Vcpu(Box<VcpuState>),
    /// The state is complete: the destination restores the vCPU and resumes the guest.
    Resume,
    /// The destination enters the guest now: from here on, the guest runs there.
    Resumed,
    /// Console bytes of the guest on the destination.
    Output(Vec<u8>),
    /// The guest halted on the destination.
    Finished {
        /// The checksum it stored.
        checksum: u64,
        /// The destination's exits.
        exits: ExitCounts,
    },
    /// The destination failed: its exit status and one line.
    Failed {
        /// kvm-hello's exit status for the failure.
        status: u8,
        /// Why.
        message: String,
    },
}
// ANCHOR_END: record

/// Why a record could not be sent or received.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The peer closed its end (or its process is gone).
    #[error("the other end closed the connection")]
    Closed,
    /// The peer did not answer within `LINK_TIMEOUT`.
    #[error("the other end did not answer within {} s", LINK_TIMEOUT.as_secs())]
    TimedOut,
    /// The socket failed.
    #[error("{0}")]
    Io(#[source] io::Error),
    /// Bytes that are no record of this format.
    #[error("a malformed record: {0}")]
    Malformed(String),
}

impl LinkError {
    fn of(err: io::Error) -> LinkError {
        match err.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted => LinkError::Closed,
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => LinkError::TimedOut,
            _ => LinkError::Io(err),
        }
    }
}

/// What runs after a round's end is sent (kvm-hello's `--kill-destination` uses it).
pub type RoundHook = Box<dyn FnMut(u32) + Send>;

/// One end of the migration stream: a connected Unix stream socket.
pub struct Link {
    stream: UnixStream,
    /// Records sent so far.
    pub sent: u64,
    /// The last round whose `RoundEnd` was sent (0: none yet).
    pub rounds_sent: u32,
    after_round: Option<RoundHook>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("stream", &self.stream)
            .field("sent", &self.sent)
            .field("rounds_sent", &self.rounds_sent)
            .finish_non_exhaustive()
    }
}

impl Link {
    /// Wraps a connected socket; both directions wait at most `LINK_TIMEOUT`.
    pub fn new(stream: UnixStream) -> io::Result<Link> {
        stream.set_read_timeout(Some(LINK_TIMEOUT))?;
        stream.set_write_timeout(Some(LINK_TIMEOUT))?;
        Ok(Link {
            stream,
            sent: 0,
            rounds_sent: 0,
            after_round: None,
        })
    }

    /// Calls `hook` with the round's number each time a `RoundEnd` has been sent.
    pub fn after_round(&mut self, hook: RoundHook) {
        self.after_round = Some(hook);
    }

    /// Sends one record. A peer that is gone is `LinkError::Closed`, never a SIGPIPE.
    pub fn send(&mut self, record: &Record) -> Result<(), LinkError> {
        let bytes = encode(record);
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            // SAFETY: `rest` is a live buffer of `rest.len()` bytes; the fd is this link's socket.
            // MSG_NOSIGNAL: a closed peer gives EPIPE instead of killing this process.
            let sent = unsafe {
                libc::send(
                    self.stream.as_raw_fd(),
                    rest.as_ptr().cast(),
                    rest.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if sent < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(LinkError::of(err));
            }
            rest = &rest[sent as usize..];
        }
        self.sent += 1;
        if let Record::RoundEnd { round, .. } = record {
            self.rounds_sent = *round;
            if let Some(hook) = self.after_round.as_mut() {
                hook(*round);
            }
        }
        Ok(())
    }

    /// Receives one record.
    pub fn receive(&mut self) -> Result<Record, LinkError> {
        let mut header = [0u8; 5];
        self.stream.read_exact(&mut header).map_err(LinkError::of)?;
        let len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]);
        if len > MAX_PAYLOAD {
            return Err(LinkError::Malformed(format!("a payload of {len} bytes")));
        }
        let mut payload = vec![0u8; len as usize];
        self.stream.read_exact(&mut payload).map_err(LinkError::of)?;
        decode(header[0], &payload)
    }

    /// The socket, e.g. to shut it down.
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }
}

/// A record as bytes: header and payload.
pub fn encode(record: &Record) -> Vec<u8> {
    let mut out = Encoder(Vec::new());
    let kind = match record {
        Record::Hello { memory_size } => {
            out.u64(*memory_size);
            1
        }
        Record::Page { gpa, bytes: page } => {
            out.u64(*gpa);
            out.0.extend_from_slice(page);
            2
        }
        Record::RoundEnd { round, pages } => {
            out.u32(*round);
            out.u32(*pages);
            3
        }
        Record::Vcpu(state) => {
            out.regs(&state.regs);
            out.sregs(&state.sregs);
            out.fpu(&state.fpu);
            4
        }
        Record::Resume => 5,
        Record::Resumed => 16,
        Record::Output(bytes) => {
            out.0.extend_from_slice(bytes);
            17
        }
        Record::Finished { checksum, exits } => {
            out.u64(*checksum);
            for count in [
                exits.io_out,
                exits.io_in,
                exits.hlt,
                exits.mmio,
                exits.shutdown,
                exits.other,
            ] {
                out.u64(count);
            }
            18
        }
        Record::Failed { status, message } => {
            out.0.push(*status);
            out.0.extend_from_slice(message.as_bytes());
            19
        }
    };
    let mut bytes = Vec::with_capacity(5 + out.0.len());
    bytes.push(kind);
    bytes.extend_from_slice(&(out.0.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&out.0);
    bytes
}

/// The record of kind `kind` with `payload`.
pub fn decode(kind: u8, payload: &[u8]) -> Result<Record, LinkError> {
    let mut input = Decoder(payload);
    let record = match kind {
        1 => Record::Hello {
            memory_size: input.u64()?,
        },
        2 => {
            let gpa = input.u64()?;
            let bytes = input.take(PAGE_SIZE)?.to_vec();
            Record::Page { gpa, bytes }
        }
        3 => Record::RoundEnd {
            round: input.u32()?,
            pages: input.u32()?,
        },
        4 => Record::Vcpu(Box::new(VcpuState {
            regs: input.regs()?,
            sregs: input.sregs()?,
            fpu: input.fpu()?,
        })),
        5 => Record::Resume,
        16 => Record::Resumed,
        17 => Record::Output(input.rest().to_vec()),
        18 => {
            let checksum = input.u64()?;
            let exits = ExitCounts {
                io_out: input.u64()?,
                io_in: input.u64()?,
                hlt: input.u64()?,
                mmio: input.u64()?,
                shutdown: input.u64()?,
                other: input.u64()?,
            };
            Record::Finished { checksum, exits }
        }
        19 => {
            let status = input.u8()?;
            let message = String::from_utf8_lossy(input.rest()).into_owned();
            Record::Failed { status, message }
        }
        other => return Err(LinkError::Malformed(format!("unknown record kind {other}"))),
    };
    if !input.0.is_empty() {
        return Err(LinkError::Malformed(format!(
            "{} bytes after a record of kind {kind}",
            input.0.len()
        )));
    }
    Ok(record)
}

struct Encoder(Vec<u8>);

impl Encoder {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn regs(&mut self, r: &kvm_regs) {
        for v in [
            r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rsp, r.rbp, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14,
            r.r15, r.rip, r.rflags,
        ] {
            self.u64(v);
        }
    }

    fn segment(&mut self, s: &kvm_segment) {
        self.u64(s.base);
        self.u32(s.limit);
        self.u16(s.selector);
        for v in [s.type_, s.present, s.dpl, s.db, s.s, s.l, s.g, s.avl, s.unusable] {
            self.u8(v);
        }
    }

    fn dtable(&mut self, d: &kvm_dtable) {
        self.u64(d.base);
        self.u16(d.limit);
    }

    fn sregs(&mut self, s: &kvm_sregs) {
        for segment in [&s.cs, &s.ds, &s.es, &s.fs, &s.gs, &s.ss, &s.tr, &s.ldt] {
            self.segment(segment);
        }
        self.dtable(&s.gdt);
        self.dtable(&s.idt);
        for v in [s.cr0, s.cr2, s.cr3, s.cr4, s.cr8, s.efer, s.apic_base] {
            self.u64(v);
        }
        for v in s.interrupt_bitmap {
            self.u64(v);
        }
    }

    fn fpu(&mut self, f: &kvm_fpu) {
        for register in &f.fpr {
            self.0.extend_from_slice(register);
        }
        self.u16(f.fcw);
        self.u16(f.fsw);
        self.u8(f.ftwx);
        self.u16(f.last_opcode);
        self.u64(f.last_ip);
        self.u64(f.last_dp);
        for register in &f.xmm {
            self.0.extend_from_slice(register);
        }
        self.u32(f.mxcsr);
    }
}

struct Decoder<'a>(&'a [u8]);

impl<'a> Decoder<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], LinkError> {
        if self.0.len() < n {
            return Err(LinkError::Malformed(format!(
                "a payload ends {} bytes early",
                n - self.0.len()
            )));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], LinkError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, LinkError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, LinkError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, LinkError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, LinkError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn regs(&mut self) -> Result<kvm_regs, LinkError> {
        Ok(kvm_regs {
            rax: self.u64()?,
            rbx: self.u64()?,
            rcx: self.u64()?,
            rdx: self.u64()?,
            rsi: self.u64()?,
            rdi: self.u64()?,
            rsp: self.u64()?,
            rbp: self.u64()?,
            r8: self.u64()?,
            r9: self.u64()?,
            r10: self.u64()?,
            r11: self.u64()?,
            r12: self.u64()?,
            r13: self.u64()?,
            r14: self.u64()?,
            r15: self.u64()?,
            rip: self.u64()?,
            rflags: self.u64()?,
        })
    }

    fn segment(&mut self) -> Result<kvm_segment, LinkError> {
        Ok(kvm_segment {
            base: self.u64()?,
            limit: self.u32()?,
            selector: self.u16()?,
            type_: self.u8()?,
            present: self.u8()?,
            dpl: self.u8()?,
            db: self.u8()?,
            s: self.u8()?,
            l: self.u8()?,
            g: self.u8()?,
            avl: self.u8()?,
            unusable: self.u8()?,
            padding: 0,
        })
    }

    fn dtable(&mut self) -> Result<kvm_dtable, LinkError> {
        Ok(kvm_dtable {
            base: self.u64()?,
            limit: self.u16()?,
            padding: [0; 3],
        })
    }

    fn sregs(&mut self) -> Result<kvm_sregs, LinkError> {
        let mut s = kvm_sregs {
            cs: self.segment()?,
            ds: self.segment()?,
            es: self.segment()?,
            fs: self.segment()?,
            gs: self.segment()?,
            ss: self.segment()?,
            tr: self.segment()?,
            ldt: self.segment()?,
            gdt: self.dtable()?,
            idt: self.dtable()?,
            ..kvm_sregs::default()
        };
        for v in [
            &mut s.cr0,
            &mut s.cr2,
            &mut s.cr3,
            &mut s.cr4,
            &mut s.cr8,
            &mut s.efer,
            &mut s.apic_base,
        ] {
            *v = self.u64()?;
        }
        for v in &mut s.interrupt_bitmap {
            *v = self.u64()?;
        }
        Ok(s)
    }

    fn fpu(&mut self) -> Result<kvm_fpu, LinkError> {
        let mut f = kvm_fpu::default();
        for register in &mut f.fpr {
            *register = self.array()?;
        }
        f.fcw = self.u16()?;
        f.fsw = self.u16()?;
        f.ftwx = self.u8()?;
        f.last_opcode = self.u16()?;
        f.last_ip = self.u64()?;
        f.last_dp = self.u64()?;
        for register in &mut f.xmm {
            *register = self.array()?;
        }
        f.mxcsr = self.u32()?;
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_record_reads_back_as_written() {
        let mut state = VcpuState::default();
        state.regs.rip = 0x1234;
        state.regs.rflags = 0x202;
        state.sregs.cr3 = 0x2000;
        state.sregs.cs.l = 1;
        state.sregs.interrupt_bitmap[3] = 9;
        state.fpu.xmm[15][0] = 0xAB;
        state.fpu.mxcsr = 0x1F80;
        let records = [
            Record::Hello { memory_size: 0x20_0000 },
            Record::Page {
                gpa: 0x1000,
                bytes: (0..PAGE_SIZE).map(|i| i as u8).collect(),
            },
            Record::RoundEnd { round: 3, pages: 17 },
            Record::Vcpu(Box::new(state)),
            Record::Resume,
            Record::Resumed,
            Record::Output(b"step 2000\n".to_vec()),
            Record::Finished {
                checksum: u64::MAX,
                exits: ExitCounts {
                    io_out: 5,
                    hlt: 1,
                    ..ExitCounts::default()
                },
            },
            Record::Failed {
                status: 6,
                message: "not implemented yet".into(),
            },
        ];
        for record in records {
            let bytes = encode(&record);
            let len = u32::from_le_bytes(bytes[1..5].try_into().unwrap()) as usize;
            assert_eq!(bytes.len(), 5 + len);
            assert_eq!(decode(bytes[0], &bytes[5..]).unwrap(), record);
        }
    }

    #[test]
    fn short_long_and_unknown_records_are_refused() {
        assert!(matches!(decode(2, &[0; 8 + 100]), Err(LinkError::Malformed(m)) if m.contains("early")));
        assert!(matches!(decode(5, &[1]), Err(LinkError::Malformed(m)) if m.contains("1 bytes after")));
        assert!(matches!(decode(99, &[]), Err(LinkError::Malformed(m)) if m.contains("kind 99")));
    }

    #[test]
    fn a_closed_peer_is_named_and_kills_nothing() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut link = Link::new(a).unwrap();
        drop(b);
        assert!(matches!(link.send(&Record::Resume), Err(LinkError::Closed)));
        assert!(matches!(link.receive(), Err(LinkError::Closed)));
    }
}
