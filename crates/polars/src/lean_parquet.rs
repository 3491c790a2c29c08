//! Parquet for tiny files: the lean writer a load uses for partitions of a few rows.
//!
//! A table partitioned by a high-cardinality key (songs by `(year, artist_id)`) is mostly files
//! of one row. Polars' writer spends ~0.3 ms of CPU on each of them: it estimates every column's
//! cardinality with a 16 KiB HyperLogLog to decide on a dictionary, builds a zstd context and
//! allocates per page. The file system needs ~0.05 ms to create one. This writer encodes what a
//! tiny file needs and nothing else: one row group, one PLAIN data page (v1) per column, no
//! dictionary, no compression (it does not pay on a few hundred bytes), min/max/null-count
//! statistics, and the same schema, logical types and `ARROW:schema` key Polars writes, so a
//! table mixing both writers' files reads as one. The schema part of the footer is encoded once
//! per table ([`LeanWriter::new`]); each file costs its values and a few dozen footer bytes.
//!
//! Files are read back by Polars, pyarrow, DuckDB, Spark and delta-rs in the test suite.

use polars::prelude::*;

/// Partitions of at most this many rows take the lean path; larger ones go to Polars' writer,
/// whose dictionaries and compression pay there.
pub(crate) const LEAN_MAX_ROWS: usize = 64;
/// ... and at most this many bytes of encoded values (uncompressed). Above it, a compressed file
/// would be noticeably smaller.
pub(crate) const LEAN_MAX_BYTES: usize = 16 * 1024;

/// Encodes tiny DataFrames of one schema as Parquet files.
pub(crate) struct LeanWriter {
    columns: Vec<LeanColumn>,
    /// `FileMetaData` field 2 (the schema list), thrift-encoded once.
    schema_field: Vec<u8>,
    /// `FileMetaData` fields 5-7 (`ARROW:schema`, created_by, column orders), encoded once.
    tail_fields: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Physical {
    Boolean,
    Int32,
    Int64,
    Float,
    Double,
    ByteArray,
}

impl Physical {
    /// The thrift `Type` enum.
    fn code(self) -> i32 {
        match self {
            Physical::Boolean => 0,
            Physical::Int32 => 1,
            Physical::Int64 => 2,
            Physical::Float => 4,
            Physical::Double => 5,
            Physical::ByteArray => 6,
        }
    }
}

struct LeanColumn {
    name: String,
    physical: Physical,
}

impl LeanWriter {
    /// A writer for frames of `schema`, or `None` when a column has a type it does not write
    /// (those tables keep Polars' writer for every file).
    pub(crate) fn new(schema: &Schema) -> Option<LeanWriter> {
        let mut columns = Vec::with_capacity(schema.len());
        let mut schema_field = Vec::new();
        let mut out = Thrift::new(&mut schema_field);
        out.list_header(2, 1, STRUCT, schema.len() + 1); // after field 1 (version)
        // The root.
        out.begin_struct();
        out.binary_field(4, b"schema");
        out.i32_field(5, schema.len() as i32);
        out.end_struct();
        for (name, dtype) in schema.iter() {
            let (physical, converted, logical): (Physical, Option<i32>, Option<Logical>) = match dtype {
                DataType::Boolean => (Physical::Boolean, None, None),
                DataType::Int32 => (Physical::Int32, None, None),
                DataType::Int64 => (Physical::Int64, None, None),
                DataType::Float32 => (Physical::Float, None, None),
                DataType::Float64 => (Physical::Double, None, None),
                DataType::String => (Physical::ByteArray, Some(0), Some(Logical::String)),
                DataType::Date => (Physical::Int32, Some(6), Some(Logical::Date)),
                DataType::Datetime(unit, zone) => (
                    Physical::Int64,
                    None,
                    Some(Logical::Timestamp {
                        utc: zone.as_ref().is_some_and(|z| !z.as_str().is_empty()),
                        unit: match unit {
                            TimeUnit::Milliseconds => 1,
                            TimeUnit::Microseconds => 2,
                            TimeUnit::Nanoseconds => 3,
                        },
                    }),
                ),
                _ => return None,
            };
            out.begin_struct();
            out.i32_field(1, physical.code());
            out.i32_field(3, 1); // OPTIONAL, as Polars writes every column
            out.binary_field(4, name.as_bytes());
            if let Some(converted) = converted {
                out.i32_field(6, converted);
            }
            if let Some(logical) = logical {
                out.field_header(10, STRUCT);
                out.begin_struct();
                match logical {
                    Logical::String => out.empty_struct_field(1),
                    Logical::Date => out.empty_struct_field(6),
                    Logical::Timestamp { utc, unit } => {
                        out.field_header(8, STRUCT);
                        out.begin_struct();
                        out.bool_field(1, utc);
                        out.field_header(2, STRUCT);
                        out.begin_struct();
                        out.empty_struct_field(unit);
                        out.end_struct();
                        out.end_struct();
                    }
                }
                out.end_struct();
            }
            out.end_struct();
            columns.push(LeanColumn { name: name.to_string(), physical });
        }
        let last = out.last;

        let arrow = schema.to_arrow(CompatLevel::newest());
        let key = polars_parquet::arrow::write::schema_to_metadata_key(&arrow);
        let mut tail_fields = Vec::new();
        let mut out = Thrift::new(&mut tail_fields);
        out.last = 4; // after field 4 (row groups)
        out.list_header(5, 4, STRUCT, 1);
        out.begin_struct();
        out.binary_field(1, key.key.as_bytes());
        out.binary_field(2, key.value.as_deref().unwrap_or_default().as_bytes());
        out.end_struct();
        out.binary_field(6, concat!("dagrun version ", env!("CARGO_PKG_VERSION"), " (build lean)").as_bytes());
        out.list_header(7, 6, STRUCT, columns.len());
        for _ in &columns {
            out.begin_struct();
            out.empty_struct_field(1); // TYPE_ORDER
            out.end_struct();
        }
        debug_assert_eq!(last, 2);
        Some(LeanWriter { columns, schema_field, tail_fields })
    }

    /// The Parquet file holding `df`, or `None` when it is not tiny (more than [`LEAN_MAX_ROWS`]
    /// rows or [`LEAN_MAX_BYTES`] of values): Polars' writer should write it.
    pub(crate) fn encode(&self, df: &DataFrame) -> Option<Vec<u8>> {
        let rows = df.height();
        if rows > LEAN_MAX_ROWS || df.width() != self.columns.len() {
            return None;
        }
        let mut file = Vec::with_capacity(256 + 64 * self.columns.len());
        file.extend_from_slice(b"PAR1");
        let mut chunks = Vec::with_capacity(self.columns.len());
        let mut page = Vec::with_capacity(128);
        let mut values = 0usize;
        for (column, lean) in df.columns().iter().zip(&self.columns) {
            if column.name().as_str() != lean.name {
                return None;
            }
            page.clear();
            let stats = encode_page(column.as_materialized_series(), lean.physical, &mut page)?;
            values += page.len();
            if values > LEAN_MAX_BYTES {
                return None;
            }
            let start = file.len() as i64;
            let mut header = Vec::with_capacity(32);
            let mut out = Thrift::new(&mut header);
            out.i32_field(1, 0); // DATA_PAGE
            out.i32_field(2, page.len() as i32);
            out.i32_field(3, page.len() as i32);
            out.field_header(5, STRUCT);
            out.begin_struct();
            out.i32_field(1, rows as i32);
            out.i32_field(2, 0); // PLAIN
            out.i32_field(3, 3); // RLE definition levels
            out.i32_field(4, 3); // RLE repetition levels
            out.end_struct();
            out.end_struct();
            file.extend_from_slice(&header);
            file.extend_from_slice(&page);
            chunks.push(Chunk { start, size: (header.len() + page.len()) as i64, stats });
        }

        let footer_start = file.len();
        let mut out = Thrift::new(&mut file);
        out.i32_field(1, 1); // version
        out.raw(&self.schema_field);
        out.last = 2;
        out.i64_field(3, rows as i64);
        out.list_header(4, 3, STRUCT, 1);
        out.begin_struct();
        out.list_header(1, 0, STRUCT, chunks.len());
        let mut total = 0i64;
        for (chunk, lean) in chunks.iter().zip(&self.columns) {
            total += chunk.size;
            out.begin_struct();
            out.i64_field(2, chunk.start);
            out.field_header(3, STRUCT);
            out.begin_struct();
            out.i32_field(1, lean.physical.code());
            out.list_header(2, 1, I32, 2);
            out.varint_i32(0); // PLAIN
            out.varint_i32(3); // RLE
            out.list_header(3, 2, BINARY, 1);
            out.varint(lean.name.len() as u64);
            out.raw(lean.name.as_bytes());
            out.i32_field(4, 0); // UNCOMPRESSED
            out.i64_field(5, rows as i64);
            out.i64_field(6, chunk.size);
            out.i64_field(7, chunk.size);
            out.i64_field(9, chunk.start);
            out.field_header(12, STRUCT);
            out.begin_struct();
            out.i64_field(3, chunk.stats.nulls);
            if let Some((min, max)) = &chunk.stats.min_max {
                out.binary_field(5, max);
                out.binary_field(6, min);
            }
            out.end_struct();
            out.end_struct();
            out.end_struct();
        }
        out.i64_field(2, total);
        out.i64_field(3, rows as i64);
        out.end_struct();
        out.raw(&self.tail_fields);
        out.last = 7;
        out.end_struct();
        let footer_len = (file.len() - footer_start) as u32;
        file.extend_from_slice(&footer_len.to_le_bytes());
        file.extend_from_slice(b"PAR1");
        Some(file)
    }
}

enum Logical {
    String,
    Date,
    Timestamp { utc: bool, unit: i16 },
}

struct Chunk {
    start: i64,
    size: i64,
    stats: Stats,
}

struct Stats {
    nulls: i64,
    /// PLAIN-encoded min and max of the non-null values; `None` when all are null or a float is NaN.
    min_max: Option<(Vec<u8>, Vec<u8>)>,
}

/// Writes the definition levels and PLAIN values of `series` into `page`.
fn encode_page(series: &Series, physical: Physical, page: &mut Vec<u8>) -> Option<Stats> {
    let rows = series.len();
    let nulls = series.null_count();
    // Definition levels: RLE/bit-packed hybrid, bit width 1, after a 4-byte length.
    let at = page.len();
    page.extend_from_slice(&[0; 4]);
    if nulls == 0 {
        put_varint(page, (rows as u64) << 1);
        page.push(1);
    } else {
        let groups = rows.div_ceil(8);
        put_varint(page, ((groups as u64) << 1) | 1);
        let bits_at = page.len();
        page.resize(bits_at + groups, 0);
        let mask = series.is_not_null();
        for (i, valid) in mask.iter().enumerate() {
            if valid == Some(true) {
                page[bits_at + i / 8] |= 1 << (i % 8);
            }
        }
    }
    let levels = (page.len() - at - 4) as u32;
    page[at..at + 4].copy_from_slice(&levels.to_le_bytes());

    let min_max = match physical {
        Physical::Boolean => {
            let ca = series.bool().ok()?;
            let (mut bits, mut n) = (0u8, 0);
            let (mut min, mut max) = (true, false);
            for v in ca.iter().flatten() {
                bits |= (v as u8) << n;
                min &= v;
                max |= v;
                n += 1;
                if n == 8 {
                    page.push(bits);
                    (bits, n) = (0, 0);
                }
            }
            if n > 0 {
                page.push(bits);
            }
            (nulls < rows).then(|| (vec![min as u8], vec![max as u8]))
        }
        Physical::Int32 => {
            let physical = series.to_physical_repr();
            let ca = physical.i32().ok()?;
            plain_numbers(ca.iter().flatten(), page, i32::to_le_bytes)
        }
        Physical::Int64 => {
            let physical = series.to_physical_repr();
            let ca = physical.i64().ok()?;
            plain_numbers(ca.iter().flatten(), page, i64::to_le_bytes)
        }
        Physical::Float => {
            let ca = series.f32().ok()?;
            float_stats(plain_floats(ca.iter().flatten(), page, f32::to_le_bytes), f32::to_le_bytes)
        }
        Physical::Double => {
            let ca = series.f64().ok()?;
            float_stats(plain_floats(ca.iter().flatten(), page, f64::to_le_bytes), f64::to_le_bytes)
        }
        Physical::ByteArray => {
            let ca = series.str().ok()?;
            let mut min: Option<&str> = None;
            let mut max: Option<&str> = None;
            for v in ca.iter().flatten() {
                page.extend_from_slice(&(v.len() as u32).to_le_bytes());
                page.extend_from_slice(v.as_bytes());
                if min.is_none_or(|m| v.as_bytes() < m.as_bytes()) {
                    min = Some(v);
                }
                if max.is_none_or(|m| v.as_bytes() > m.as_bytes()) {
                    max = Some(v);
                }
            }
            min.zip(max).map(|(a, b)| (a.as_bytes().to_vec(), b.as_bytes().to_vec()))
        }
    };
    Some(Stats { nulls: nulls as i64, min_max })
}

fn plain_numbers<T: PartialOrd + Copy, const N: usize>(
    values: impl Iterator<Item = T>,
    page: &mut Vec<u8>,
    bytes: fn(T) -> [u8; N],
) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut range: Option<(T, T)> = None;
    for v in values {
        page.extend_from_slice(&bytes(v));
        range = Some(match range {
            None => (v, v),
            Some((lo, hi)) => (if v < lo { v } else { lo }, if v > hi { v } else { hi }),
        });
    }
    range.map(|(lo, hi)| (bytes(lo).to_vec(), bytes(hi).to_vec()))
}

/// Floats: min and max as Parquet orders them (no NaN in the statistics at all, -0.0 for a zero
/// min and +0.0 for a zero max).
fn plain_floats<T: num_float::Float, const N: usize>(
    values: impl Iterator<Item = T>,
    page: &mut Vec<u8>,
    bytes: fn(T) -> [u8; N],
) -> Option<(T, T)> {
    let mut range: Option<(T, T)> = None;
    let mut nan = false;
    for v in values {
        page.extend_from_slice(&bytes(v));
        if v.is_nan() {
            nan = true;
            continue;
        }
        range = Some(match range {
            None => (v, v),
            Some((lo, hi)) => (if v < lo { v } else { lo }, if v > hi { v } else { hi }),
        });
    }
    if nan { None } else { range }
}

fn float_stats<T: num_float::Float, const N: usize>(
    range: Option<(T, T)>,
    bytes: fn(T) -> [u8; N],
) -> Option<(Vec<u8>, Vec<u8>)> {
    range.map(|(lo, hi)| {
        let lo = if lo.is_zero() { T::neg_zero() } else { lo };
        let hi = if hi.is_zero() { T::zero() } else { hi };
        (bytes(lo).to_vec(), bytes(hi).to_vec())
    })
}

/// The little the float statistics need of `f32` and `f64`.
mod num_float {
    pub(crate) trait Float: Copy + PartialOrd {
        fn is_nan(self) -> bool;
        fn is_zero(self) -> bool;
        fn zero() -> Self;
        fn neg_zero() -> Self;
    }
    macro_rules! float {
        ($t:ty) => {
            impl Float for $t {
                fn is_nan(self) -> bool {
                    <$t>::is_nan(self)
                }
                fn is_zero(self) -> bool {
                    self == 0.0
                }
                fn zero() -> Self {
                    0.0
                }
                fn neg_zero() -> Self {
                    -0.0
                }
            }
        };
    }
    float!(f32);
    float!(f64);
}

// --- thrift compact protocol ---------------------------------------------------------------------

const I32: u8 = 5;
const I64: u8 = 6;
const BINARY: u8 = 8;
const STRUCT: u8 = 12;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The writing half of thrift's compact protocol, enough for Parquet's footer and page headers.
/// Field ids are delta-encoded against the last one written in the current struct.
struct Thrift<'a> {
    out: &'a mut Vec<u8>,
    last: i16,
    stack: Vec<i16>,
}

impl<'a> Thrift<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        Thrift { out, last: 0, stack: Vec::new() }
    }

    fn raw(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    fn varint(&mut self, v: u64) {
        put_varint(self.out, v);
    }

    fn varint_i32(&mut self, v: i32) {
        self.varint(((v << 1) ^ (v >> 31)) as u32 as u64);
    }

    fn varint_i64(&mut self, v: i64) {
        self.varint(((v << 1) ^ (v >> 63)) as u64);
    }

    fn field_header(&mut self, id: i16, kind: u8) {
        let delta = id - self.last;
        if (1..=15).contains(&delta) {
            self.out.push(((delta as u8) << 4) | kind);
        } else {
            self.out.push(kind);
            self.varint_i32(id as i32);
        }
        self.last = id;
    }

    fn begin_struct(&mut self) {
        self.stack.push(self.last);
        self.last = 0;
    }

    fn end_struct(&mut self) {
        self.out.push(0);
        self.last = self.stack.pop().unwrap_or(0);
    }

    fn empty_struct_field(&mut self, id: i16) {
        self.field_header(id, STRUCT);
        self.out.push(0);
    }

    fn bool_field(&mut self, id: i16, v: bool) {
        self.field_header(id, if v { 1 } else { 2 });
    }

    fn i32_field(&mut self, id: i16, v: i32) {
        self.field_header(id, I32);
        self.varint_i32(v);
    }

    fn i64_field(&mut self, id: i16, v: i64) {
        self.field_header(id, I64);
        self.varint_i64(v);
    }

    fn binary_field(&mut self, id: i16, v: &[u8]) {
        self.field_header(id, BINARY);
        self.varint(v.len() as u64);
        self.raw(v);
    }

    /// A list field `id` (the previous field being `after`) of `len` elements of `kind`.
    fn list_header(&mut self, id: i16, after: i16, kind: u8, len: usize) {
        self.last = after;
        self.field_header(id, 9);
        if len < 15 {
            self.out.push(((len as u8) << 4) | kind);
        } else {
            self.out.push(0xF0 | kind);
            self.varint(len as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn read(bytes: Vec<u8>) -> DataFrame {
        ParquetReader::new(Cursor::new(bytes)).finish().unwrap()
    }

    fn sample() -> DataFrame {
        let ts = Series::new("at".into(), [Some(1_541_106_106_796_000i64), None, Some(0)])
            .cast(&DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC)))
            .unwrap();
        let day = Series::new("day".into(), [Some(17_000i32), Some(-1), None]).cast(&DataType::Date).unwrap();
        df![
            "song_id" => [Some("SOABC"), None, Some("Ã©tÃ© \"quoted\"")],
            "duration" => [Some(218.93179), Some(f64::NAN), None],
            "year" => [Some(0i32), Some(2018), None],
            "id" => [Some(i64::MIN), Some(i64::MAX), Some(0)],
            "ratio" => [Some(1.5f32), None, Some(-0.0)],
            "paid" => [Some(true), None, Some(false)],
        ]
        .unwrap()
        .hstack(&[ts.into(), day.into()])
        .unwrap()
    }

    #[test]
    fn a_lean_file_reads_back_equal_with_nulls_nan_and_every_supported_type() {
        let df = sample();
        let writer = LeanWriter::new(df.schema()).expect("every type is supported");
        let back = read(writer.encode(&df).unwrap());
        assert_eq!(back.schema(), df.schema());
        assert!(back.equals_missing(&df), "{back}\n{df}");
    }

    #[test]
    fn lean_files_carry_the_schema_key_and_statistics_polars_writes() {
        let df = df!["name" => ["b", "a", "c"], "n" => [3i64, -1, 2]].unwrap();
        let bytes = LeanWriter::new(df.schema()).unwrap().encode(&df).unwrap();
        let metadata = polars_parquet::parquet::read::read_metadata(&mut Cursor::new(bytes)).unwrap();
        assert_eq!(metadata.num_rows, 3);
        let keys: Vec<_> = metadata.key_value_metadata.iter().flatten().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["ARROW:schema"]);
        let columns = metadata.row_groups[0].parquet_columns();
        let footer = metadata.footer_buf.as_ref();
        let name = columns[0].statistics(footer).unwrap().unwrap().expect_binary();
        assert_eq!((name.min_value.as_deref(), name.max_value.as_deref()), (Some(&b"a"[..]), Some(&b"c"[..])));
        let n = columns[1].statistics(footer).unwrap().unwrap().expect_int64();
        assert_eq!((n.min_value, n.max_value, n.null_count), (Some(-1), Some(3), Some(0)));
    }

    #[test]
    fn frames_too_big_or_of_other_types_are_left_to_polars() {
        let many = df!["n" => (0..(LEAN_MAX_ROWS as i64 + 1)).collect::<Vec<_>>()].unwrap();
        assert!(LeanWriter::new(many.schema()).unwrap().encode(&many).is_none());
        let wide = df!["s" => ["x".repeat(LEAN_MAX_BYTES + 1)]].unwrap();
        assert!(LeanWriter::new(wide.schema()).unwrap().encode(&wide).is_none());
        let unsupported = df!["b" => [&b"bytes"[..]]].unwrap();
        assert!(LeanWriter::new(unsupported.schema()).is_none());
    }

    #[test]
    fn an_all_null_column_and_zero_rows_read_back() {
        let df = df!["s" => [None::<&str>, None], "n" => [None::<i32>, Some(4)]].unwrap();
        let writer = LeanWriter::new(df.schema()).unwrap();
        assert!(read(writer.encode(&df).unwrap()).equals_missing(&df));
        let empty = df.head(Some(0));
        assert_eq!(read(writer.encode(&empty).unwrap()).height(), 0);
    }
}
