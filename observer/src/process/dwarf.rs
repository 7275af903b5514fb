//! Runtime struct layouts read from a Go binary's own DWARF, when it has
//! some (not with `-ldflags=-w`): the compiler that built the binary wrote
//! them, so they are right for any release, known to the table or not.

use gimli::{AttributeValue, EndianSlice, LittleEndian, SectionId};
use object::{CompressionFormat, Object, ObjectSection};

use std::collections::HashMap;

use observer_common::goruntime::field;

use super::layout::{FIELDS, Global, RuntimeLayout};

/// Larger than any Go binary's DWARF section; guards against bad headers.
const MAX_SECTION: usize = 1 << 30;
/// The member an atomic wrapper (`atomic.Int64`, …) keeps its value in.
const ATOMIC_VALUE: &[u8] = b"value";

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
    #[error("no struct runtime.workType or runtime.gcControllerState in the DWARF")]
    NoRuntimeTypes,
}

/// The layout from the binary's DWARF: a figure whose member is missing,
/// or whose type is a struct other than an atomic wrapper, has no offset.
/// [`DwarfError::Absent`] for binaries built without DWARF.
pub fn runtime_layout<'a, R: object::ReadRef<'a>>(elf: &object::File<'a, R>) -> Result<RuntimeLayout, DwarfError> {
    if elf.section_by_name(".debug_info").is_none() && elf.section_by_name(".zdebug_info").is_none() {
        return Err(DwarfError::Absent);
    }
    // Go is little-endian on every platform the agent runs on.
    let sections = gimli::DwarfSections::load(|id| load_section(elf, id))?;
    let dwarf = sections.borrow(|data| EndianSlice::new(data, LittleEndian));
    let types = read_types(&dwarf)?;
    if types.work.is_empty() && types.controller.is_empty() {
        return Err(DwarfError::NoRuntimeTypes);
    }
    let mut offsets = [None; field::COUNT];
    for (index, spec) in FIELDS.iter().enumerate() {
        let members = match spec.global {
            Global::Work => &types.work,
            Global::GcController => &types.controller,
        };
        offsets[index] = members.get(spec.member.as_bytes()).and_then(|&(offset, ty)| {
            match ty.and_then(|ty| types.kinds.get(&ty)) {
                // An atomic wrapper: its value, wherever it is inside.
                Some(TypeKind::Struct { atomic_value: Some(inner) }) => offset.checked_add(*inner),
                // Some other struct: not a number to read.
                Some(TypeKind::Struct { atomic_value: None }) => None,
                Some(TypeKind::Other) | None => Some(offset),
            }
        });
    }
    Ok(RuntimeLayout { offsets })
}

/// What a member's type is, as far as reading it goes.
#[derive(Debug, Clone, Copy)]
enum TypeKind {
    /// `atomic_value`: the offset of `value` in a struct of an `atomic`
    /// package (`sync/atomic`, `runtime/internal/atomic`,
    /// `internal/runtime/atomic`).
    Struct {
        atomic_value: Option<u64>,
    },
    Other,
}

/// Members as name → (offset, type's `.debug_info` offset).
type Members<'d> = HashMap<&'d [u8], (u64, Option<usize>)>;

#[derive(Default)]
struct Types<'d> {
    work: Members<'d>,
    controller: Members<'d>,
    /// Every top-level type entry by its `.debug_info` offset.
    kinds: HashMap<usize, TypeKind>,
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

/// One walk over every unit: the members of the two runtime structs and
/// the kind of each top-level type (Go writes types as top-level entries
/// of their package's unit, and refers to them across units). Units are
/// walked from their headers: building a `gimli::Unit` would also parse
/// the line tables, which are not loaded.
fn read_types<'d>(dwarf: &Dwarf<'d>) -> Result<Types<'d>, DwarfError> {
    let mut types = Types::default();
    let mut units = dwarf.units();
    while let Some(header) = units.next()? {
        let abbrevs = dwarf.abbreviations(&header)?;
        let mut entries = header.entries(&abbrevs);
        // The top-level entry being walked: which runtime struct, or the
        // offset of an atomic wrapper.
        let mut in_global: Option<Global> = None;
        let mut in_atomic: Option<usize> = None;
        while let Some(entry) = entries.next_dfs()? {
            let depth = entry.depth();
            if depth == 1 {
                in_global = None;
                in_atomic = None;
                let Some(at) = entry.offset().to_debug_info_offset(&header).map(|o| o.0) else { continue };
                if entry.tag() != gimli::DW_TAG_structure_type {
                    types.kinds.insert(at, TypeKind::Other);
                    continue;
                }
                types.kinds.insert(at, TypeKind::Struct { atomic_value: None });
                let name = name_of(dwarf, entry).unwrap_or_default();
                in_global = [Global::Work, Global::GcController].into_iter().find(|g| g.type_name().as_bytes() == name);
                if is_atomic_type(name) {
                    in_atomic = Some(at);
                }
            } else if depth == 2 && entry.tag() == gimli::DW_TAG_member {
                let Some(name) = name_of(dwarf, entry) else { continue };
                let Some(offset) = member_location(entry) else { continue };
                if let Some(global) = in_global {
                    let ty = match entry.attr_value(gimli::DW_AT_type) {
                        Some(AttributeValue::DebugInfoRef(o)) => Some(o.0),
                        Some(AttributeValue::UnitRef(o)) => o.to_debug_info_offset(&header).map(|o| o.0),
                        _ => None,
                    };
                    let members = match global {
                        Global::Work => &mut types.work,
                        Global::GcController => &mut types.controller,
                    };
                    members.insert(name, (offset, ty));
                } else if let Some(at) = in_atomic.filter(|_| name == ATOMIC_VALUE) {
                    types.kinds.insert(at, TypeKind::Struct { atomic_value: Some(offset) });
                }
            }
        }
    }
    Ok(types)
}

/// `internal/runtime/atomic.Int64` and the like.
fn is_atomic_type(name: &[u8]) -> bool {
    name.windows(8).any(|w| w == b"/atomic.") || name.starts_with(b"atomic.")
}

fn member_location(entry: &gimli::DebuggingInformationEntry<EndianSlice<'_, LittleEndian>>) -> Option<u64> {
    match entry.attr_value(gimli::DW_AT_data_member_location)? {
        AttributeValue::Udata(off) => Some(off),
        value => value.udata_value(),
    }
}

/// Go writes names inline (`DW_FORM_string`); `.debug_str` references are
/// read too.
fn name_of<'d>(
    dwarf: &Dwarf<'d>,
    entry: &gimli::DebuggingInformationEntry<EndianSlice<'d, LittleEndian>>,
) -> Option<&'d [u8]> {
    match entry.attr_value(gimli::DW_AT_name)? {
        AttributeValue::String(name) => Some(name.slice()),
        AttributeValue::DebugStrRef(at) => dwarf.debug_str.get_str(at).ok().map(|n| n.slice()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_wrappers_by_package() {
        assert!(is_atomic_type(b"internal/runtime/atomic.Int64"));
        assert!(is_atomic_type(b"runtime/internal/atomic.Int32"));
        assert!(is_atomic_type(b"sync/atomic.Uint32"));
        assert!(!is_atomic_type(b"runtime.gcControllerState"));
        assert!(!is_atomic_type(b"example.com/notatomic.Int64"));
    }

    #[test]
    fn own_executable_has_no_go_runtime_types() {
        // A Rust test binary: DWARF maybe, runtime.workType never.
        let data = std::fs::read("/proc/self/exe").unwrap();
        let elf = object::File::parse(&*data).unwrap();
        match runtime_layout(&elf) {
            Err(DwarfError::Absent | DwarfError::NoRuntimeTypes) => {}
            other => panic!("{other:?}"),
        }
    }
}
