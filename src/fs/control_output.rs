//! The bytes a control file reads as: made when the file is read from its
//! start, kept in memory while they are small and in an unlinked
//! temporary file past that, so that the status of a session with a
//! million changed paths, or a long log, costs the daemon no memory.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Past this many bytes, a control file's content goes to a file.
const IN_MEMORY_LIMIT: usize = 1 << 20;

/// A control file's content, as made for one reader.
#[derive(Debug)]
pub enum ControlOutput {
    Memory(Vec<u8>),
    Spilled { file: File, len: u64 },
}

impl ControlOutput {
    /// Up to `size` bytes at `offset`.
    pub fn read_at(&self, offset: u64, size: u32) -> io::Result<Vec<u8>> {
        match self {
            ControlOutput::Memory(bytes) => {
                let start = (offset as usize).min(bytes.len());
                let end = (start + size as usize).min(bytes.len());
                Ok(bytes[start..end].to_vec())
            }
            ControlOutput::Spilled { file, len } => {
                let start = offset.min(*len);
                let mut out = vec![0; (*len - start).min(size as u64) as usize];
                file.read_exact_at(&mut out, start)?;
                Ok(out)
            }
        }
    }
}

impl From<String> for ControlOutput {
    fn from(text: String) -> ControlOutput {
        ControlOutput::Memory(text.into_bytes())
    }
}

/// Builds a [`ControlOutput`]: `write!` into it, then [`finish`].
///
/// [`finish`]: OutputWriter::finish
pub struct OutputWriter<'a> {
    buffer: Vec<u8>,
    spilled: Option<(File, u64)>,
    /// Where a spilled file is made (the repository's `tmp/`).
    tmp_dir: &'a Path,
}

impl<'a> OutputWriter<'a> {
    pub fn new(tmp_dir: &'a Path) -> OutputWriter<'a> {
        OutputWriter {
            buffer: Vec::new(),
            spilled: None,
            tmp_dir,
        }
    }

    fn spill(&mut self) -> io::Result<()> {
        let (file, len) = match &mut self.spilled {
            Some(spilled) => spilled,
            None => self
                .spilled
                .insert((tempfile::tempfile_in(self.tmp_dir)?, 0)),
        };
        file.write_all(&self.buffer)?;
        *len += self.buffer.len() as u64;
        self.buffer.clear();
        Ok(())
    }

    pub fn finish(mut self) -> io::Result<ControlOutput> {
        if self.spilled.is_none() {
            return Ok(ControlOutput::Memory(self.buffer));
        }
        self.spill()?;
        let (file, len) = self.spilled.take().expect("spilled above");
        Ok(ControlOutput::Spilled { file, len })
    }
}

impl Write for OutputWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= IN_MEMORY_LIMIT {
            self.spill()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_output_spills_to_a_file_and_reads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = OutputWriter::new(dir.path());
        let mut expected = Vec::new();
        for i in 0..200_000 {
            let line = format!("  A [C] data/{i}\n");
            writer.write_all(line.as_bytes()).unwrap();
            expected.extend_from_slice(line.as_bytes());
        }
        let output = writer.finish().unwrap();
        assert!(matches!(output, ControlOutput::Spilled { .. }));
        let mut read = Vec::new();
        while read.len() < expected.len() {
            read.extend(output.read_at(read.len() as u64, 128 << 10).unwrap());
        }
        assert_eq!(read, expected);
        assert!(
            output
                .read_at(expected.len() as u64, 10)
                .unwrap()
                .is_empty()
        );
        // The file is unlinked: nothing is left in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn short_output_stays_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = OutputWriter::new(dir.path());
        writer.write_all(b"On branch main\n").unwrap();
        let output = writer.finish().unwrap();
        assert!(matches!(output, ControlOutput::Memory(_)));
        assert_eq!(output.read_at(3, 6).unwrap(), b"branch");
    }
}
