//! Runtime struct layouts read from a Go binary's own DWARF, when it has
//! some (not with `-ldflags=-w`): the compiler that built the binary wrote
//! them, so they are right for any release, known to the table or not.

use gimli::{AttributeValue, EndianSlice, LittleEndian, SectionId};
use object::{CompressionFormat, Object, ObjectSection};

use super::layout::RuntimeLayout;

/// The struct and field whose offset the GC probe reads.
const WORK_TYPE: &[u8] = b"runtime.workType";
const CYCLES: &[u8] = b"cycles";
/// Larger than any Go binary's DWARF section; guards against bad headers.
const MAX_SECTION: usize = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum DwarfError {
    #[error("no DWARF (.debug_info)")]
    Absent,
    #[error("section {name}: {source}")]
    Section { name: &'static str, source: object::Error },
    #[error("section {name}: unsupported compression {format:?}")]
    Compression { name: &'static str, format: CompressionFormat },
    #[error("section {name}: bad zlib data")]
    Inflate { name: &'static str },
    #[error("reading DWARF: {0}")]
    Gimli(#[from] gimli::Error),
    #[error("no struct runtime.workType with a member `cycles`")]
    NoWorkCycles,
}

/// The layout from the binary's DWARF. [`DwarfError::Absent`] for binaries
/// built without it.
pub fn runtime_layout<'a, R: object::ReadRef<'a>>(elf: &object::File<'a, R>) -> Result<RuntimeLayout, DwarfError> {
    if elf.section_by_name(".debug_info").is_none() && elf.section_by_name(".zdebug_info").is_none() {
        return Err(DwarfError::Absent);
    }
    // Go is little-endian on every platform the agent runs on.
    let sections = gimli::DwarfSections::load(|id| load_section(elf, id))?;
    let dwarf = sections.borrow(|data| EndianSlice::new(data, LittleEndian));
    let work_cycles = member_offset(&dwarf, WORK_TYPE, CYCLES)?.ok_or(DwarfError::NoWorkCycles)?;
    Ok(RuntimeLayout { work_cycles })
}

/// One section, decompressed (Go compresses its DWARF with zlib); empty
/// when the binary lacks it.
fn load_section<'a, R: object::ReadRef<'a>>(elf: &object::File<'a, R>, id: SectionId) -> Result<Vec<u8>, DwarfError> {
    let name = id.name();
    // Only the sections a type lookup reads (names may be indirect in
    // DWARF 5, Go's default since 1.25): the line tables are large.
    if !matches!(
        id,
        SectionId::DebugInfo
            | SectionId::DebugAbbrev
            | SectionId::DebugStr
            | SectionId::DebugStrOffsets
            | SectionId::DebugLineStr
            | SectionId::DebugAddr
    ) {
        return Ok(Vec::new());
    }
    let Some(section) = elf.section_by_name(name) else { return Ok(Vec::new()) };
    let compressed = section.compressed_data().map_err(|source| DwarfError::Section { name, source })?;
    match compressed.format {
        CompressionFormat::None => Ok(compressed.data.to_vec()),
        CompressionFormat::Zlib => {
            let limit = usize::try_from(compressed.uncompressed_size).unwrap_or(MAX_SECTION).min(MAX_SECTION);
            miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(compressed.data, limit)
                .map_err(|_| DwarfError::Inflate { name })
        }
        format => Err(DwarfError::Compression { name, format }),
    }
}

type Dwarf<'d> = gimli::Dwarf<EndianSlice<'d, LittleEndian>>;

/// `data_member_location` of member `field` of the struct type named
/// `type_name`; Go writes both as top-level entries of the package's unit.
/// Units are walked from their headers: building a `gimli::Unit` would
/// also parse the line tables, which are not loaded.
fn member_offset(dwarf: &Dwarf<'_>, type_name: &[u8], field: &[u8]) -> Result<Option<u64>, DwarfError> {
    let mut units = dwarf.units();
    while let Some(header) = units.next()? {
        let abbrevs = dwarf.abbreviations(&header)?;
        let mut entries = header.entries(&abbrevs);
        let mut in_type = false;
        while let Some(entry) = entries.next_dfs()? {
            let depth = entry.depth();
            if depth == 1 {
                in_type = entry.tag() == gimli::DW_TAG_structure_type && name_is(dwarf, entry, type_name);
            } else if in_type && depth == 2 && entry.tag() == gimli::DW_TAG_member && name_is(dwarf, entry, field) {
                return Ok(match entry.attr_value(gimli::DW_AT_data_member_location) {
                    Some(AttributeValue::Udata(off)) => Some(off),
                    Some(value) => value.udata_value(),
                    None => None,
                });
            }
        }
    }
    Ok(None)
}

/// Go writes names inline (`DW_FORM_string`); `.debug_str` references are
/// read too.
fn name_is(
    dwarf: &Dwarf<'_>,
    entry: &gimli::DebuggingInformationEntry<EndianSlice<'_, LittleEndian>>,
    want: &[u8],
) -> bool {
    match entry.attr_value(gimli::DW_AT_name) {
        Some(AttributeValue::String(name)) => name.slice() == want,
        Some(AttributeValue::DebugStrRef(at)) => dwarf.debug_str.get_str(at).is_ok_and(|name| name.slice() == want),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_executable_has_no_go_runtime_types() {
        // A Rust test binary: DWARF maybe, runtime.workType never.
        let data = std::fs::read("/proc/self/exe").unwrap();
        let elf = object::File::parse(&*data).unwrap();
        match runtime_layout(&elf) {
            Err(DwarfError::Absent | DwarfError::NoWorkCycles) => {}
            other => panic!("{other:?}"),
        }
    }
}
