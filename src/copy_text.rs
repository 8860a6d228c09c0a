//! PostgreSQL's `COPY` text format: fields escaped on the way in and unescaped on the way out,
//! a chunk at a time, so that a large value (a 100 000-user tenant's snapshot) streams through
//! without ever standing whole in memory.

/// Appends `field` to `buffer` as (part of) one field of a `COPY … FROM STDIN` text row:
/// backslash, tab, newline and carriage return escaped.
pub(crate) fn escape_into(buffer: &mut Vec<u8>, field: &[u8]) {
    let mut start = 0;
    for (at, byte) in field.iter().enumerate() {
        let escaped: &[u8] = match byte {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            _ => continue,
        };
        buffer.extend_from_slice(&field[start..at]);
        buffer.extend_from_slice(escaped);
        start = at + 1;
    }
    buffer.extend_from_slice(&field[start..]);
}

/// Undoes `COPY … TO STDOUT`'s text escaping of one field, chunk by chunk (an escape may
/// straddle two chunks). The field ends at the first unescaped tab or newline.
#[derive(Debug, Default)]
pub(crate) struct FieldReader {
    after_backslash: bool,
    ended: bool,
}

impl FieldReader {
    /// Appends the field's bytes in `chunk` to `out`, unescaped; returns how many bytes of
    /// `chunk` belonged to the field (its terminator included), the rest following it.
    pub(crate) fn read(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> usize {
        for (at, &byte) in chunk.iter().enumerate() {
            if self.ended {
                return at;
            }
            if self.after_backslash {
                self.after_backslash = false;
                // What COPY TO writes: \b \f \n \r \t \v for those characters, and a backslash
                // before a backslash (or the delimiter, a tab, written as \t).
                out.push(match byte {
                    b'b' => 0x08,
                    b'f' => 0x0c,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'v' => 0x0b,
                    other => other,
                });
                continue;
            }
            match byte {
                b'\\' => self.after_backslash = true,
                b'\t' | b'\n' => self.ended = true,
                other => out.push(other),
            }
        }
        chunk.len()
    }

    /// Whether the field's terminator was seen.
    pub(crate) fn ended(&self) -> bool {
        self.ended
    }
}

#[cfg(test)]
mod tests {
    use super::{escape_into, FieldReader};
    use proptest::prelude::*;

    proptest! {
        /// Whatever the bytes and wherever the chunks are cut, a field escaped for COPY reads
        /// back as itself and ends at its terminator.
        #[test]
        fn an_escaped_field_reads_back_across_any_chunking(
            field in proptest::collection::vec(any::<u8>(), 0..200),
            cuts in proptest::collection::vec(0usize..400, 0..6),
        ) {
            let mut row = Vec::new();
            escape_into(&mut row, &field);
            row.extend_from_slice(b"\tnext\n");
            let mut cuts: Vec<usize> = cuts.into_iter().map(|cut| cut % (row.len() + 1)).collect();
            cuts.push(0);
            cuts.push(row.len());
            cuts.sort_unstable();
            let mut reader = FieldReader::default();
            let mut read = Vec::new();
            let mut consumed = 0;
            for window in cuts.windows(2) {
                let chunk = &row[window[0]..window[1]];
                let taken = reader.read(chunk, &mut read);
                consumed += taken;
                if reader.ended() {
                    break;
                }
                prop_assert_eq!(taken, chunk.len());
            }
            prop_assert!(reader.ended());
            prop_assert_eq!(&read, &field);
            prop_assert_eq!(&row[consumed..], b"next\n");
        }
    }
}
