//! A small reader for the kernel's BTF (`/sys/kernel/btf/vmlinux`): struct
//! member offsets and enum names, which is all the agent needs. Rust eBPF has
//! no CO-RE field relocations, so offsets are resolved here and passed to the
//! programs as load-time globals.

use std::{collections::HashMap, path::Path};

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read BTF at {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    #[error("BTF has no struct or union named `{0}`")]
    NoStruct(String),
    #[error("BTF struct `{ty}` has no member `{member}`")]
    NoMember { ty: String, member: String },
    #[error("BTF has no enum named `{0}`")]
    NoEnum(String),
    #[error("BTF has no prototype of tracepoint `{0}` (no `btf_trace_{0}`)")]
    NoTracepoint(String),
}

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, Clone)]
struct Member {
    name: String,
    type_id: u32,
    bit_offset: u32,
}

#[derive(Debug, Clone)]
enum Type {
    /// Struct or union.
    Composite {
        name: String,
        members: Vec<Member>,
    },
    Enum {
        name: String,
        values: Vec<(String, i64)>,
    },
    /// typedef, const, volatile, restrict, type tag: points at another type.
    Alias(u32),
    Ptr(u32),
    Int(String),
    /// A function prototype's parameter types.
    FuncProto(Vec<u32>),
    Other,
}

/// Parsed BTF types, indexed by name for structs, unions and enums.
#[derive(Debug)]
pub struct Btf {
    types: Vec<Type>,
    by_name: HashMap<String, Vec<u32>>,
    /// Typedefs by name (the tracepoint prototypes are `btf_trace_<name>`).
    typedefs: HashMap<String, u32>,
}

impl Btf {
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file(Path::new(VMLINUX))
    }

    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|error| BtfError::Read { path: path.display().to_string(), error })?;
        Self::parse(&data)
    }

    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        let u32_at = |off: usize| -> Result<u32, BtfError> {
            data.get(off..off + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or(BtfError::Malformed("truncated"))
        };
        if data.len() < 24 || data[0..2] != [0x9f, 0xeb] {
            return Err(BtfError::Malformed("bad magic (big-endian BTF is not supported)"));
        }
        let hdr_len = u32_at(4)? as usize;
        let (type_off, type_len) = (u32_at(8)? as usize, u32_at(12)? as usize);
        let (str_off, str_len) = (u32_at(16)? as usize, u32_at(20)? as usize);
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(BtfError::Malformed("string section out of bounds"))?;
        let name = |off: u32| -> String {
            let rest = strings.get(off as usize..).unwrap_or_default();
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            String::from_utf8_lossy(&rest[..end]).into_owned()
        };

        // Type id 0 is `void`.
        let mut types = vec![Type::Other];
        let mut by_name: HashMap<String, Vec<u32>> = HashMap::new();
        let mut typedefs = HashMap::new();
        let mut pos = hdr_len + type_off;
        let end = pos + type_len;
        while pos < end {
            let name_off = u32_at(pos)?;
            let info = u32_at(pos + 4)?;
            let size_or_type = u32_at(pos + 8)?;
            pos += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let ty = match kind {
                KIND_STRUCT | KIND_UNION => {
                    let mut members = Vec::with_capacity(vlen);
                    for i in 0..vlen {
                        let m = pos + i * 12;
                        let offset = u32_at(m + 8)?;
                        members.push(Member {
                            name: name(u32_at(m)?),
                            type_id: u32_at(m + 4)?,
                            // With kind_flag the top 8 bits hold a bitfield size.
                            bit_offset: if kind_flag { offset & 0x00ff_ffff } else { offset },
                        });
                    }
                    pos += vlen * 12;
                    Type::Composite { name: name(name_off), members }
                }
                KIND_ENUM | KIND_ENUM64 => {
                    let step = if kind == KIND_ENUM { 8 } else { 12 };
                    let mut values = Vec::with_capacity(vlen);
                    for i in 0..vlen {
                        let v = pos + i * step;
                        let lo = u32_at(v + 4)?;
                        let value = if kind == KIND_ENUM {
                            i64::from(lo as i32)
                        } else {
                            (i64::from(u32_at(v + 8)?) << 32) | i64::from(lo)
                        };
                        values.push((name(u32_at(v)?), value));
                    }
                    pos += vlen * step;
                    Type::Enum { name: name(name_off), values }
                }
                KIND_TYPEDEF => {
                    typedefs.insert(name(name_off), types.len() as u32);
                    Type::Alias(size_or_type)
                }
                KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => Type::Alias(size_or_type),
                KIND_INT => {
                    pos += 4;
                    Type::Int(name(name_off))
                }
                KIND_VAR | KIND_DECL_TAG => {
                    pos += 4;
                    Type::Other
                }
                KIND_ARRAY => {
                    pos += 12;
                    Type::Other
                }
                KIND_FUNC_PROTO => {
                    let params = (0..vlen).map(|i| u32_at(pos + i * 8 + 4)).collect::<Result<_, _>>()?;
                    pos += vlen * 8;
                    Type::FuncProto(params)
                }
                KIND_DATASEC => {
                    pos += vlen * 12;
                    Type::Other
                }
                KIND_PTR => Type::Ptr(size_or_type),
                7 | 12 | 16 => Type::Other,
                _ => return Err(BtfError::Malformed("unknown type kind")),
            };
            let id = types.len() as u32;
            if let Type::Composite { name, .. } | Type::Enum { name, .. } = &ty
                && !name.is_empty()
            {
                by_name.entry(name.clone()).or_default().push(id);
            }
            types.push(ty);
        }
        Ok(Self { types, by_name, typedefs })
    }

    /// Follows typedefs and qualifiers to the type they name.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            match self.types.get(id as usize)? {
                Type::Alias(next) => id = *next,
                ty => return Some(ty),
            }
        }
        None
    }

    fn composite(&self, name: &str) -> Option<&[Member]> {
        self.by_name.get(name)?.iter().find_map(|&id| match &self.types[id as usize] {
            // Skip forward-declared (empty) duplicates.
            Type::Composite { members, .. } if !members.is_empty() => Some(members.as_slice()),
            _ => None,
        })
    }

    /// Finds `name` among `members`, looking inside anonymous structs and
    /// unions; returns its bit offset and type id.
    fn find_member(&self, members: &[Member], name: &str) -> Option<(u32, u32)> {
        for m in members {
            if m.name == name {
                return Some((m.bit_offset, m.type_id));
            }
            if m.name.is_empty()
                && let Some(Type::Composite { members: inner, .. }) = self.resolve(m.type_id)
                && let Some((off, ty)) = self.find_member(inner, name)
            {
                return Some((m.bit_offset + off, ty));
            }
        }
        None
    }

    /// Byte offset of `path` (e.g. `["sk_cgrp_data", "cgroup"]`) inside
    /// struct `ty`, following embedded (not pointed-to) structs.
    pub fn member_offset(&self, ty: &str, path: &[&str]) -> Result<u32, BtfError> {
        let mut members = self.composite(ty).ok_or_else(|| BtfError::NoStruct(ty.into()))?;
        let mut container = ty.to_string();
        let mut bits = 0;
        for (i, field) in path.iter().enumerate() {
            let (off, type_id) = self
                .find_member(members, field)
                .ok_or_else(|| BtfError::NoMember { ty: container.clone(), member: (*field).into() })?;
            bits += off;
            if i + 1 < path.len() {
                match self.resolve(type_id) {
                    Some(Type::Composite { members: inner, name }) => {
                        members = inner;
                        container = name.clone();
                    }
                    _ => return Err(BtfError::NoStruct(format!("{container}.{field}"))),
                }
            }
        }
        Ok(bits / 8)
    }

    /// The argument types of tracepoint `name`, as C spells them (`struct
    /// sock *`, `enum sk_rst_reason`, `int`), from its `btf_trace_<name>`
    /// typedef (a pointer to a prototype whose first parameter, the
    /// tracepoint's `void *` data, is left out).
    pub fn tracepoint_args(&self, name: &str) -> Result<Vec<String>, BtfError> {
        let no = || BtfError::NoTracepoint(name.into());
        let id = *self.typedefs.get(&format!("btf_trace_{name}")).ok_or_else(no)?;
        let Some(Type::Ptr(proto)) = self.resolve(id) else { return Err(no()) };
        let Some(Type::FuncProto(params)) = self.resolve(*proto) else { return Err(no()) };
        Ok(params.iter().skip(1).map(|&p| self.describe(p)).collect())
    }

    /// A type as C spells it, qualifiers left out.
    fn describe(&self, mut id: u32) -> String {
        for _ in 0..32 {
            match self.types.get(id as usize) {
                Some(Type::Alias(next)) => id = *next,
                _ => break,
            }
        }
        match self.types.get(id as usize) {
            _ if id == 0 => "void".into(),
            Some(Type::Ptr(to)) => format!("{} *", self.describe(*to)),
            Some(Type::Composite { name, .. }) => format!("struct {name}"),
            Some(Type::Enum { name, .. }) => format!("enum {name}"),
            Some(Type::Int(name)) => name.clone(),
            _ => "?".into(),
        }
    }

    /// The values of enum `name`, as (enumerator, value) pairs.
    pub fn enum_values(&self, name: &str) -> Result<&[(String, i64)], BtfError> {
        self.by_name
            .get(name)
            .and_then(|ids| {
                ids.iter().find_map(|&id| match &self.types[id as usize] {
                    Type::Enum { values, .. } => Some(values.as_slice()),
                    _ => None,
                })
            })
            .ok_or_else(|| BtfError::NoEnum(name.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob: `struct outer { int a; union { int b; struct inner c; }; }`
    /// with `struct inner { int x; int y; }` and `enum colour { RED = 1, BLUE = 7 }`.
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0inner\0x\0y\0outer\0a\0b\0c\0colour\0RED\0BLUE\0btf_trace_hit\0";
        let s = |name: &str| -> u32 {
            let needle = format!("\0{name}\0");
            strings.windows(needle.len()).position(|w| w == needle.as_bytes()).unwrap() as u32 + 1
        };
        let mut t: Vec<u32> = Vec::new();
        // 1: int
        t.extend([s("int"), KIND_INT << 24, 4, 32]);
        // 2: struct inner { x@0, y@32 }
        t.extend([s("inner"), (KIND_STRUCT << 24) | 2, 8, s("x"), 1, 0, s("y"), 1, 32]);
        // 3: anonymous union { b, c }
        t.extend([0, (KIND_UNION << 24) | 2, 8, s("b"), 1, 0, s("c"), 2, 0]);
        // 4: struct outer { a@0, <anon>@64 }
        t.extend([s("outer"), (KIND_STRUCT << 24) | 2, 16, s("a"), 1, 0, 0, 3, 64]);
        // 5: enum colour
        t.extend([s("colour"), (KIND_ENUM << 24) | 2, 4, s("RED"), 1, s("BLUE"), 7]);
        // 6: void *; 7: const struct outer; 8: const struct outer *
        t.extend([0, KIND_PTR << 24, 0, 0, KIND_CONST << 24, 4, 0, KIND_PTR << 24, 7]);
        // 9: void (void *, const struct outer *, enum colour, int), unnamed parameters
        t.extend([0, (KIND_FUNC_PROTO << 24) | 4, 0, 0, 6, 0, 8, 0, 5, 0, 1]);
        // 10: pointer to it; 11: typedef btf_trace_hit
        t.extend([0, KIND_PTR << 24, 9, s("btf_trace_hit"), KIND_TYPEDEF << 24, 10]);
        let types: Vec<u8> = t.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut out = vec![0x9f, 0xeb, 1, 0];
        for v in [24u32, 0, types.len() as u32, types.len() as u32, strings.len() as u32] {
            out.extend(v.to_le_bytes());
        }
        out.extend(types);
        out.extend(strings);
        out
    }

    #[test]
    fn member_offsets_follow_anonymous_unions_and_embedded_structs() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.member_offset("outer", &["a"]).unwrap(), 0);
        assert_eq!(btf.member_offset("outer", &["b"]).unwrap(), 8);
        assert_eq!(btf.member_offset("outer", &["c", "y"]).unwrap(), 12);
        assert!(matches!(btf.member_offset("outer", &["z"]), Err(BtfError::NoMember { .. })));
        assert!(matches!(btf.member_offset("nope", &["a"]), Err(BtfError::NoStruct(_))));
    }

    #[test]
    fn enum_values_are_named() {
        let btf = Btf::parse(&sample()).unwrap();
        let values = btf.enum_values("colour").unwrap();
        assert_eq!(values, &[("RED".to_string(), 1), ("BLUE".to_string(), 7)]);
    }

    #[test]
    fn tracepoint_arguments_are_read_from_the_prototype() {
        let btf = Btf::parse(&sample()).unwrap();
        let args = btf.tracepoint_args("hit").unwrap();
        assert_eq!(args, ["struct outer *", "enum colour", "int"]);
        assert!(matches!(btf.tracepoint_args("miss"), Err(BtfError::NoTracepoint(_))));
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(b"not btf at all, not at all").is_err());
    }

    #[test]
    fn reads_this_kernels_vmlinux_when_present() {
        let Ok(btf) = Btf::from_sys_fs() else {
            eprintln!("SKIPPED: no {VMLINUX} on this machine");
            return;
        };
        // `struct sock` starts with `struct sock_common`.
        assert_eq!(btf.member_offset("sock", &["__sk_common"]).unwrap(), 0);
        assert!(btf.member_offset("sk_buff", &["dev"]).is_ok());
        assert!(btf.enum_values("tcp_ca_state").is_ok());
        let args = btf.tracepoint_args("tcp_receive_reset").unwrap();
        assert_eq!(args, ["struct sock *"]);
    }
}
