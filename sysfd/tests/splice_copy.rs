//! splice, tee, vmsplice and the copy helper with its read/write fallback.

mod common;

use std::io::{IoSlice, Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;

use common::{TestResult, become_nobody, limit_open_files, run_in_child};
use furrow_sysfd::{
    CopyStats, Error, SpliceFlags, copy, copy_read_write, pipe, set_pipe_size, splice, tee,
    vmsplice,
};

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn file_with(data: &[u8]) -> Result<std::fs::File, Box<dyn std::error::Error>> {
    let mut file = tempfile::tempfile()?;
    file.write_all(data)?;
    file.rewind()?;
    Ok(file)
}

fn contents(file: &mut std::fs::File) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    file.rewind()?;
    let mut out = Vec::new();
    file.read_to_end(&mut out)?;
    Ok(out)
}

#[test]
fn file_to_file_goes_through_an_internal_pipe() -> TestResult {
    let data = pattern(3 * 1024 * 1024 + 17);
    let src = file_with(&data)?;
    let mut dst = tempfile::tempfile()?;
    let stats = copy(&src, &dst, None)?;
    assert_eq!(
        stats,
        CopyStats {
            spliced: data.len() as u64,
            read_written: 0
        }
    );
    assert_eq!(contents(&mut dst)?, data);
    Ok(())
}

#[test]
fn limit_stops_the_copy() -> TestResult {
    let data = pattern(100_000);
    let mut src = file_with(&data)?;
    let mut dst = tempfile::tempfile()?;
    assert_eq!(copy(&src, &dst, Some(1000))?.bytes(), 1000);
    assert_eq!(contents(&mut dst)?, &data[..1000]);
    // The source position moved by exactly the bytes copied.
    assert_eq!(src.stream_position()?, 1000);
    assert_eq!(copy(&src, &dst, Some(0))?.bytes(), 0);
    src.seek(SeekFrom::Start(0))?;
    Ok(())
}

#[test]
fn pipe_to_file_and_file_to_pipe_splice_directly() -> TestResult {
    let data = pattern(2 * 1024 * 1024);
    let (read_end, write_end) = pipe()?;
    let payload = data.clone();
    let writer = std::thread::spawn(move || -> Result<(), std::io::Error> {
        let mut pipe_w = std::fs::File::from(write_end);
        pipe_w.write_all(&payload)
    });
    let mut dst = tempfile::tempfile()?;
    let stats = copy(&read_end, &dst, None)?;
    writer.join().map_err(|_| "writer panicked")??;
    assert_eq!(stats.spliced, data.len() as u64);
    assert_eq!(contents(&mut dst)?, data);

    let src = file_with(&data)?;
    let (read_end, write_end) = pipe()?;
    let reader = std::thread::spawn(move || -> Result<Vec<u8>, std::io::Error> {
        let mut out = Vec::new();
        std::fs::File::from(read_end).read_to_end(&mut out)?;
        Ok(out)
    });
    let stats = copy(&src, &write_end, None)?;
    drop(write_end);
    assert_eq!(stats.spliced, data.len() as u64);
    assert_eq!(reader.join().map_err(|_| "reader panicked")??, data);
    Ok(())
}

#[test]
fn append_only_output_falls_back_to_write() -> TestResult {
    let data = pattern(3 * 1024 * 1024 + 5);
    let src = file_with(&data)?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("log");
    std::fs::write(&path, b"head:")?;
    let dst = std::fs::OpenOptions::new().append(true).open(&path)?;
    let stats = copy(&src, &dst, None)?;
    assert_eq!(stats.bytes(), data.len() as u64);
    assert_eq!(stats.read_written, data.len() as u64);
    let mut expected = b"head:".to_vec();
    expected.extend_from_slice(&data);
    assert_eq!(std::fs::read(&path)?, expected);
    Ok(())
}

#[test]
fn input_that_cannot_splice_falls_back_to_read() -> TestResult {
    let expected = std::fs::read("/proc/self/limits")?;
    let src = std::fs::File::open("/proc/self/limits")?;
    let mut dst = tempfile::tempfile()?;
    let stats = copy(&src, &dst, None)?;
    assert_eq!(stats.spliced, 0);
    assert_eq!(stats.read_written, expected.len() as u64);
    assert_eq!(contents(&mut dst)?, expected);
    Ok(())
}

#[test]
fn read_write_copy_matches() -> TestResult {
    let data = pattern(500_000);
    let src = file_with(&data)?;
    let mut dst = tempfile::tempfile()?;
    let stats = copy_read_write(&src, &dst, None)?;
    assert_eq!(
        stats,
        CopyStats {
            spliced: 0,
            read_written: data.len() as u64
        }
    );
    assert_eq!(contents(&mut dst)?, data);
    Ok(())
}

#[test]
fn vmsplice_tee_and_splice_with_offset() -> TestResult {
    let (r1, w1) = pipe()?;
    let (r2, w2) = pipe()?;
    let n = vmsplice(
        &w1,
        &[IoSlice::new(b"hello "), IoSlice::new(b"world")],
        SpliceFlags::empty(),
    )?;
    assert_eq!(n, 11);
    assert_eq!(tee(&r1, &w2, 64, SpliceFlags::empty())?, 11);
    let mut first = [0u8; 11];
    std::fs::File::from(r1.try_clone()?).read_exact(&mut first)?;
    let mut second = [0u8; 11];
    std::fs::File::from(r2.try_clone()?).read_exact(&mut second)?;
    assert_eq!(&first, b"hello world");
    assert_eq!(first, second);
    // From a file at an offset: the file position does not move.
    let src = file_with(b"0123456789")?;
    let mut offset = 4i64;
    assert_eq!(
        splice(&src, Some(&mut offset), &w1, None, 3, SpliceFlags::MOVE)?,
        3
    );
    assert_eq!(offset, 7);
    let mut got = [0u8; 3];
    std::fs::File::from(r1).read_exact(&mut got)?;
    assert_eq!(&got, b"456");
    assert_eq!(set_pipe_size(&w2, 1 << 16)?, 1 << 16);
    Ok(())
}

#[test]
fn errors_of_the_calls() -> TestResult {
    let a = file_with(b"abc")?;
    let b = tempfile::tempfile()?;
    let (r, w) = pipe()?;
    // Neither end a pipe.
    assert_err!(
        splice(&a, None, &b, None, 3, SpliceFlags::empty()),
        Error::InvalidArgument { .. }
    );
    // An offset on a pipe.
    let mut offset = 0i64;
    assert_err!(
        splice(&r, Some(&mut offset), &b, None, 3, SpliceFlags::empty()),
        Error::InvalidArgument {
            errno: libc::ESPIPE,
            ..
        }
    );
    // Nothing in a pipe, without blocking.
    assert_err!(
        splice(&r, None, &b, None, 3, SpliceFlags::NONBLOCK),
        Error::WouldBlock { .. }
    );
    assert_err!(
        tee(&a, &w, 3, SpliceFlags::empty()),
        Error::InvalidArgument { .. }
    );
    assert_err!(
        tee(&r, &w, 3, SpliceFlags::empty()),
        Error::InvalidArgument { .. }
    );
    assert_err!(
        vmsplice(&a, &[IoSlice::new(b"x")], SpliceFlags::empty()),
        Error::InvalidArgument { .. }
    );
    assert_err!(set_pipe_size(&a, 1 << 16), Error::InvalidArgument { .. });
    assert_err!(set_pipe_size(&w, usize::MAX), Error::InvalidArgument { .. });
    // Wrong direction: copying into a read-only fd, from a write-only one.
    let read_only = std::fs::File::open("/proc/self/limits")?;
    assert_err!(copy(&a, &read_only, None), Error::InvalidArgument { .. });
    let dir = tempfile::tempdir()?;
    let write_only = std::fs::File::create(dir.path().join("w"))?;
    assert_err!(copy(&write_only, &b, None), Error::InvalidArgument { .. });
    assert_err!(
        copy_read_write(&write_only, &b, None),
        Error::InvalidArgument { .. }
    );
    drop(r);
    // Writing into a pipe without reader.
    assert_err!(
        copy(&a, w.as_fd(), None),
        Error::Unknown {
            errno: libc::EPIPE,
            ..
        }
    );
    Ok(())
}

#[test]
fn privileges_and_limits() {
    run_in_child(|| {
        let (_r, w) = pipe()?;
        become_nobody()?;
        // Above /proc/sys/fs/pipe-max-size without CAP_SYS_RESOURCE.
        assert_err!(set_pipe_size(&w, 1 << 30), Error::PermissionDenied { .. });
        Ok(())
    });
    run_in_child(|| {
        limit_open_files(4)?;
        assert_err!(pipe(), Error::ResourceLimit { .. });
        Ok(())
    });
}
