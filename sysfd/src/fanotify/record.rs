//! Parser of the records `read(2)` returns on a fanotify fd: event metadata followed by
//! optional info records (FID, DFID, DFID_NAME, old/new DFID_NAME, PIDFD, ERROR).
//!
//! Every fd found in the buffer (the event fd and a pidfd) is wrapped in an `OwnedFd` as soon
//! as it is seen, so it is closed on every path, including a malformed record later in the
//! same buffer.

use std::ffi::OsString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;

use crate::error::{Error, Result};

/// A file handle reported in a FID info record, usable with `open_by_handle_at(2)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileHandle {
    /// Filesystem id (`__kernel_fsid_t`) of the object.
    pub fsid: [i32; 2],
    /// `file_handle.handle_type`.
    pub handle_type: i32,
    /// `file_handle.f_handle`, opaque.
    pub bytes: Vec<u8>,
}

/// One info record following the event metadata.
#[derive(Debug)]
pub enum InfoRecord {
    /// `FAN_EVENT_INFO_TYPE_FID`: the object the event is about.
    Fid(FileHandle),
    /// `FAN_EVENT_INFO_TYPE_DFID`: the directory the event happened in.
    DirFid(FileHandle),
    /// `FAN_EVENT_INFO_TYPE_DFID_NAME`: the directory and the entry name (`.` for the
    /// directory itself).
    DirFidName(FileHandle, OsString),
    /// `FAN_EVENT_INFO_TYPE_OLD_DFID_NAME`: where a renamed entry came from.
    OldDirFidName(FileHandle, OsString),
    /// `FAN_EVENT_INFO_TYPE_NEW_DFID_NAME`: where a renamed entry went.
    NewDirFidName(FileHandle, OsString),
    /// `FAN_EVENT_INFO_TYPE_PIDFD`: a pidfd of the acting process (`None` when the kernel
    /// could not provide one, e.g. the process already exited). Closed on drop.
    Pidfd(Option<OwnedFd>),
    /// `FAN_EVENT_INFO_TYPE_ERROR`: a filesystem error (`FAN_FS_ERROR`).
    Error {
        /// The errno of the first error.
        error: i32,
        /// How many errors happened since the last report.
        count: u32,
    },
    /// A record type this crate does not know, kept raw.
    Unknown {
        /// `info_type`.
        info_type: u8,
        /// The record body after the 4-byte header.
        data: Vec<u8>,
    },
}

/// Event metadata with the fds already owned.
#[derive(Debug)]
pub(crate) struct ParsedEvent {
    pub mask: u64,
    pub pid: i32,
    pub fd: Option<OwnedFd>,
    pub info: Vec<InfoRecord>,
}

const METADATA_LEN: usize = std::mem::size_of::<libc::fanotify_event_metadata>();
const HEADER_LEN: usize = 4;
const FSID_LEN: usize = 8;
const HANDLE_HEADER_LEN: usize = 8;

fn bytes<const N: usize>(buf: &[u8], at: usize) -> Result<[u8; N]> {
    let slice = buf
        .get(at..at + N)
        .ok_or(Error::invalid("fanotify_read (truncated record)"))?;
    let mut out = [0u8; N];
    out.copy_from_slice(slice);
    Ok(out)
}

fn u16_at(buf: &[u8], at: usize) -> Result<u16> {
    Ok(u16::from_ne_bytes(bytes(buf, at)?))
}

fn u32_at(buf: &[u8], at: usize) -> Result<u32> {
    Ok(u32::from_ne_bytes(bytes(buf, at)?))
}

fn i32_at(buf: &[u8], at: usize) -> Result<i32> {
    Ok(i32::from_ne_bytes(bytes(buf, at)?))
}

fn u64_at(buf: &[u8], at: usize) -> Result<u64> {
    Ok(u64::from_ne_bytes(bytes(buf, at)?))
}

/// Takes ownership of an fd number found in a record; negative numbers mean "no fd".
///
/// # Safety
///
/// `fd` must be an fd the kernel just installed for this reader and nobody else owns.
unsafe fn adopt(fd: i32) -> Option<OwnedFd> {
    // SAFETY: upheld by the caller.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

fn parse_handle(body: &[u8]) -> Result<(FileHandle, usize)> {
    let fsid = [i32_at(body, 0)?, i32_at(body, 4)?];
    let handle_bytes = u32_at(body, FSID_LEN)? as usize;
    let handle_type = i32_at(body, FSID_LEN + 4)?;
    let start = FSID_LEN + HANDLE_HEADER_LEN;
    let handle = body
        .get(start..start + handle_bytes)
        .ok_or(Error::invalid("fanotify_read (truncated file handle)"))?;
    Ok((
        FileHandle {
            fsid,
            handle_type,
            bytes: handle.to_vec(),
        },
        start + handle_bytes,
    ))
}

fn parse_name(body: &[u8], at: usize) -> OsString {
    let tail = body.get(at..).unwrap_or_default();
    let name: Vec<u8> = tail.iter().copied().take_while(|b| *b != 0).collect();
    OsString::from_vec(name)
}

/// Parses the info records of one event. Pidfds are adopted as they are met.
///
/// # Safety
///
/// Any pidfd numbers in `records` must be fds the kernel just installed for this reader.
unsafe fn parse_info(records: &[u8]) -> Result<Vec<InfoRecord>> {
    let mut info = Vec::new();
    let mut offset = 0;
    while offset + HEADER_LEN <= records.len() {
        let info_type = records[offset];
        let len = u16_at(records, offset + 2)? as usize;
        if len < HEADER_LEN || offset + len > records.len() {
            return Err(Error::invalid("fanotify_read (bad info record length)"));
        }
        let body = &records[offset + HEADER_LEN..offset + len];
        let record = match info_type {
            libc::FAN_EVENT_INFO_TYPE_FID => InfoRecord::Fid(parse_handle(body)?.0),
            libc::FAN_EVENT_INFO_TYPE_DFID => InfoRecord::DirFid(parse_handle(body)?.0),
            libc::FAN_EVENT_INFO_TYPE_DFID_NAME
            | libc::FAN_EVENT_INFO_TYPE_OLD_DFID_NAME
            | libc::FAN_EVENT_INFO_TYPE_NEW_DFID_NAME => {
                let (handle, end) = parse_handle(body)?;
                let name = parse_name(body, end);
                match info_type {
                    libc::FAN_EVENT_INFO_TYPE_DFID_NAME => InfoRecord::DirFidName(handle, name),
                    libc::FAN_EVENT_INFO_TYPE_OLD_DFID_NAME => {
                        InfoRecord::OldDirFidName(handle, name)
                    }
                    _ => InfoRecord::NewDirFidName(handle, name),
                }
            }
            libc::FAN_EVENT_INFO_TYPE_PIDFD => {
                // SAFETY: upheld by the caller.
                InfoRecord::Pidfd(unsafe { adopt(i32_at(body, 0)?) })
            }
            libc::FAN_EVENT_INFO_TYPE_ERROR => InfoRecord::Error {
                error: i32_at(body, 0)?,
                count: u32_at(body, 4)?,
            },
            other => InfoRecord::Unknown {
                info_type: other,
                data: body.to_vec(),
            },
        };
        info.push(record);
        offset += len;
    }
    Ok(info)
}

/// Parses a whole read buffer.
///
/// # Safety
///
/// Every fd number in `buf` must be an fd the kernel just installed for this reader and
/// nobody else owns: they are all adopted (and so closed when dropped).
pub(crate) unsafe fn parse_buffer(buf: &[u8]) -> Result<Vec<ParsedEvent>> {
    let mut events = Vec::new();
    let mut offset = 0;
    while offset + METADATA_LEN <= buf.len() {
        let event_len = u32_at(buf, offset)? as usize;
        let version = buf[offset + 4];
        let metadata_len = u16_at(buf, offset + 6)? as usize;
        let mask = u64_at(buf, offset + 8)?;
        // SAFETY: upheld by the caller; adopted before anything else can fail.
        let fd = unsafe { adopt(i32_at(buf, offset + 16)?) };
        let pid = i32_at(buf, offset + 20)?;
        if version != libc::FANOTIFY_METADATA_VERSION
            || metadata_len < METADATA_LEN
            || event_len < metadata_len
            || offset + event_len > buf.len()
        {
            return Err(Error::invalid("fanotify_read (unexpected metadata)"));
        }
        let records = &buf[offset + metadata_len..offset + event_len];
        // SAFETY: upheld by the caller.
        let info = unsafe { parse_info(records)? };
        events.push(ParsedEvent {
            mask,
            pid,
            fd,
            info,
        });
        offset += event_len;
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(event_len: usize, mask: u64, fd: i32, pid: i32) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(event_len as u32).to_ne_bytes());
        out.push(libc::FANOTIFY_METADATA_VERSION);
        out.push(0);
        out.extend_from_slice(&(METADATA_LEN as u16).to_ne_bytes());
        out.extend_from_slice(&mask.to_ne_bytes());
        out.extend_from_slice(&fd.to_ne_bytes());
        out.extend_from_slice(&pid.to_ne_bytes());
        out
    }

    fn dfid_name(info_type: u8, handle: &[u8], name: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&7i32.to_ne_bytes());
        body.extend_from_slice(&9i32.to_ne_bytes());
        body.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
        body.extend_from_slice(&1i32.to_ne_bytes());
        body.extend_from_slice(handle);
        body.extend_from_slice(name);
        body.push(0);
        while !(body.len() + HEADER_LEN).is_multiple_of(4) {
            body.push(0);
        }
        let mut out = vec![info_type, 0];
        out.extend_from_slice(&((body.len() + HEADER_LEN) as u16).to_ne_bytes());
        out.extend(body);
        out
    }

    #[test]
    fn parses_metadata_and_name_records() -> Result<()> {
        let record = dfid_name(libc::FAN_EVENT_INFO_TYPE_DFID_NAME, &[1, 2, 3, 4], b"file");
        let mut buf = metadata(METADATA_LEN + record.len(), libc::FAN_CREATE, -1, 42);
        buf.extend(record);
        buf.extend(metadata(METADATA_LEN, libc::FAN_Q_OVERFLOW, -1, 0));
        // SAFETY: the buffer holds no fds (all are FAN_NOFD).
        let events = unsafe { parse_buffer(&buf)? };
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].pid, 42);
        assert!(events[0].fd.is_none());
        match &events[0].info[..] {
            [InfoRecord::DirFidName(handle, name)] => {
                assert_eq!(handle.fsid, [7, 9]);
                assert_eq!(handle.handle_type, 1);
                assert_eq!(handle.bytes, vec![1, 2, 3, 4]);
                assert_eq!(name, "file");
            }
            other => panic!("unexpected records {other:?}"),
        }
        assert_eq!(events[1].mask, libc::FAN_Q_OVERFLOW);
        Ok(())
    }

    #[test]
    fn error_and_unknown_records() -> Result<()> {
        let mut error = vec![libc::FAN_EVENT_INFO_TYPE_ERROR, 0, 12, 0];
        error.extend_from_slice(&5i32.to_ne_bytes());
        error.extend_from_slice(&3u32.to_ne_bytes());
        let unknown = vec![99u8, 0, 8, 0, 1, 2, 3, 4];
        let mut buf = metadata(METADATA_LEN + error.len() + unknown.len(), 0, -1, 1);
        buf.extend(error);
        buf.extend(unknown);
        // SAFETY: no fds in the buffer.
        let events = unsafe { parse_buffer(&buf)? };
        match &events[0].info[..] {
            [
                InfoRecord::Error { error: 5, count: 3 },
                InfoRecord::Unknown {
                    info_type: 99,
                    data,
                },
            ] => assert_eq!(data, &vec![1, 2, 3, 4]),
            other => panic!("unexpected records {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn malformed_records_are_invalid() {
        let mut bad_version = metadata(METADATA_LEN, 0, -1, 1);
        bad_version[4] = 1;
        // SAFETY: no fds in the buffer.
        assert!(matches!(
            unsafe { parse_buffer(&bad_version) },
            Err(Error::InvalidArgument { .. })
        ));
        let mut bad_info = metadata(METADATA_LEN + 4, 0, -1, 1);
        bad_info.extend_from_slice(&[1, 0, 200, 0]);
        // SAFETY: no fds in the buffer.
        assert!(matches!(
            unsafe { parse_buffer(&bad_info) },
            Err(Error::InvalidArgument { .. })
        ));
    }
}
