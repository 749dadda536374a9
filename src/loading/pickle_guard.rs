//! Screens a PyTorch `.bin` checkpoint before candle's pickle reader (`candle_core::pickle`) sees it.
//!
//! candle never executes pickle code: a `GLOBAL` becomes a name and a `REDUCE` a record of the call.
//! But its reader trusts the file's structure, so a crafted `data.pkl` can still
//! - panic it (`_rebuild_tensor_v2` called with fewer than four arguments: `Vec::remove` out of
//!   bounds; a storage tuple with fewer than five items; `_rebuild_from_type_v2` with fewer than three;
//!   an overflowing `LONG1` or offset in builds with overflow checks),
//! - blow the stack (a tuple nested a million deep: the recursive drop overflows and the process
//!   aborts), or
//! - exhaust memory (`BINGET` deep-copies memoised objects: a few hundred bytes that double an object
//!   forty times; `BINUNICODE` allocates the length it reads before reading),
//!
//! and it silently skips entries it does not understand, so a file that references `os.system` loads
//! as if nothing were wrong (or fails later with a misleading "missing tensor").
//!
//! [`check_torch_checkpoint`] runs first and refuses all of that with a message naming the problem:
//! 1. every `data.pkl` in the zip is at most [`MAX_PICKLE_BYTES`] and is walked opcode by opcode with an
//!    abstract stack that bounds the nesting depth ([`MAX_DEPTH`]) and the number of objects candle
//!    would materialise, memo copies included ([`MAX_OBJECTS`]), and the bytes of text they hold, memo
//!    copies included, against the pickle's own size ([`max_materialised_bytes`]: one 32 MiB string
//!    memoised once and fetched 200 times would otherwise be copied 200 times), checks every length
//!    against the bytes left, and refuses opcodes candle does not know;
//! 2. every `GLOBAL` must be one of the few a `torch.save`d state dict uses ([`ALLOWED_GLOBALS`]:
//!    the tensor rebuild functions, storage types, `collections.OrderedDict`); anything else (`os.system`,
//!    `builtins.eval`, …) is refused before any object is built;
//! 3. the pickle, parsed by candle (now within those bounds), must be a dict, and each tensor entry must
//!    have the argument structure candle's tensor reader indexes into, with a shape, strides and offset
//!    that fit in its storage.
//!
//! Only `std`, `zip` and `candle_core` are used, and errors are plain strings (the caller wraps them in
//! `Error::Weights` with the path), so that the fuzz targets can include this file as it is
//! (`fuzz/fuzz_targets/bin_load.rs`, feature `guard`).
//!
//! Wiring: `zip = { version = "9", default-features = false }` in Cargo.toml's `[dependencies]` (the
//! zip candle-core already builds), `pub mod pickle_guard;` in `src/loading/mod.rs`, and in
//! `WeightStore::open` (`src/loading/weights.rs`), before `PthTensors::new`:
//! `super::pickle_guard::check_torch_checkpoint(path)
//!     .map_err(|e| bad(format!("not a readable PyTorch checkpoint: {e}")))?;`

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use candle_core::pickle::{Object, Stack};

/// Largest `data.pkl` accepted. It holds names, shapes and offsets only (the tensor data lives in the
/// zip's other entries): about 150 bytes per tensor, so 64 MiB is far above any UNet.
pub const MAX_PICKLE_BYTES: u64 = 64 << 20;
/// Deepest nesting of tuples, lists and dicts accepted (a state dict needs about 6).
pub const MAX_DEPTH: usize = 64;
/// Most objects candle may build, memo copies included (a state dict needs about 60 per tensor).
pub const MAX_OBJECTS: u64 = 1 << 22;
/// Slack over twice the pickle's size in [`max_materialised_bytes`]: small strings fetched from the
/// memo many times (the storage location `"cpu"`, one per tensor) stay far below it.
const MATERIALISED_SLACK_BYTES: u64 = 1 << 20;
/// Largest tensor (elements) or storage accepted: 2^40, beyond any checkpoint and far from overflow.
const MAX_ELEMENTS: u64 = 1 << 40;

/// The globals a `torch.save`d state dict of float tensors references; nothing else is let through.
pub const ALLOWED_GLOBALS: &[(&str, &str)] = &[
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch", "Tensor"),
    ("torch.nn.parameter", "Parameter"),
    ("torch", "FloatStorage"),
    ("torch", "DoubleStorage"),
    ("torch", "HalfStorage"),
    ("torch", "BFloat16Storage"),
    ("torch", "ByteStorage"),
    ("torch", "LongStorage"),
];

/// The most bytes of text (strings, names, long integers) candle's reader may build from a pickle of
/// `pickle_len` bytes: each is read once onto the stack and copied once into the memo (2×), plus a
/// little slack. Only memo fetches (`BINGET`, a deep copy) can go past that.
pub fn max_materialised_bytes(pickle_len: usize) -> u64 {
    (pickle_len as u64).saturating_mul(2).saturating_add(MATERIALISED_SLACK_BYTES)
}

/// Checks the PyTorch zip checkpoint at `path` (see the module docs). `Err` says what is wrong; the
/// caller adds the path.
pub fn check_torch_checkpoint(path: &Path) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| format!("not a zip archive (PyTorch ≥ 1.6 writes its checkpoints as zip archives): {e}"))?;
    let mut found = false;
    for index in 0..zip.len() {
        let mut entry = zip.by_index(index).map_err(|e| format!("unreadable zip entry {index}: {e}"))?;
        let name = entry.name().map(|n| n.into_owned()).unwrap_or_default();
        if !name.ends_with("data.pkl") {
            continue;
        }
        found = true;
        if entry.size() > MAX_PICKLE_BYTES {
            return Err(format!("{name} is {} bytes; at most {MAX_PICKLE_BYTES} are accepted", entry.size()));
        }
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry
            .by_ref()
            .take(MAX_PICKLE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read {name}: {e}"))?;
        if bytes.len() as u64 > MAX_PICKLE_BYTES {
            return Err(format!("{name} is larger than {MAX_PICKLE_BYTES} bytes"));
        }
        check_pickle(&bytes).map_err(|e| format!("{name}: {e}"))?;
    }
    if !found {
        return Err("the zip archive holds no data.pkl, so it is not a PyTorch checkpoint".into());
    }
    Ok(())
}

/// Checks one `data.pkl`: the opcode walk (bounds and globals), then the state-dict structure.
pub fn check_pickle(bytes: &[u8]) -> Result<(), String> {
    scan(bytes)?;
    // Within the bounds just checked, candle's reader cannot exhaust memory, recurse too deep or
    // meet an opcode it does not know.
    let mut stack = Stack::empty();
    stack.read_loop(&mut &bytes[..]).map_err(|e| format!("malformed pickle: {e}"))?;
    let object = stack.finalize().map_err(|e| format!("malformed pickle: {e}"))?;
    check_state_dict(&object)
}

/// What the abstract stack knows of an object: enough to follow candle's reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Mark,
    List,
    Dict,
    /// `collections.OrderedDict`, which candle's REDUCE turns into a dict.
    OrderedDictClass,
    Other,
}

#[derive(Debug, Clone, Copy)]
struct Item {
    kind: Kind,
    /// Objects in this one's tree.
    objects: u64,
    /// Nesting depth of this one's tree (1 for a leaf).
    depth: usize,
    /// Bytes of text (strings, names, integers) in this one's tree.
    bytes: u64,
}

impl Item {
    fn leaf(kind: Kind) -> Self {
        Item { kind, objects: 1, depth: 1, bytes: 0 }
    }

    fn text(kind: Kind, bytes: usize) -> Self {
        Item { kind, objects: 1, depth: 1, bytes: bytes as u64 }
    }
}

/// A cursor over the pickle bytes with checked reads.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(|| {
            format!(
                "truncated pickle: {what} at byte {} needs {n} bytes, {} are left",
                self.pos,
                self.bytes.len() - self.pos
            )
        })?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A newline-terminated line, as candle reads GLOBAL's operands.
    fn line(&mut self) -> Result<String, String> {
        let rest = &self.bytes[self.pos..];
        let len = rest.iter().position(|&b| b == b'\n').ok_or("truncated pickle: GLOBAL without a newline")?;
        self.pos += len + 1;
        let line = rest[..len].strip_suffix(b"\r").unwrap_or(&rest[..len]);
        Ok(String::from_utf8_lossy(line).into_owned())
    }
}

/// The abstract interpretation of candle's pickle reader (`candle_core::pickle::Stack::read`): the same
/// opcodes with the same stack effects, tracking object counts and depths instead of objects.
fn scan(bytes: &[u8]) -> Result<(), String> {
    let mut r = Reader { bytes, pos: 0 };
    let mut stack: Vec<Item> = Vec::new();
    let mut memo: HashMap<u32, Item> = HashMap::new();
    let mut total: u64 = 0;
    let max_bytes = max_materialised_bytes(bytes.len());
    let mut total_bytes: u64 = 0;

    fn pop(stack: &mut Vec<Item>, at: usize) -> Result<Item, String> {
        stack.pop().ok_or_else(|| format!("malformed pickle: pop from an empty stack at byte {at}"))
    }
    fn pop_to_mark(stack: &mut Vec<Item>, at: usize) -> Result<Vec<Item>, String> {
        let mark = stack
            .iter()
            .rposition(|i| i.kind == Kind::Mark)
            .ok_or_else(|| format!("malformed pickle: no MARK before byte {at}"))?;
        let items = stack.split_off(mark + 1);
        stack.pop();
        Ok(items)
    }
    fn container(kind: Kind, children: &[Item]) -> Item {
        Item {
            kind,
            objects: 1 + children.iter().map(|c| c.objects).sum::<u64>(),
            depth: 1 + children.iter().map(|c| c.depth).max().unwrap_or(0),
            bytes: children.iter().map(|c| c.bytes).fold(0, u64::saturating_add),
        }
    }

    loop {
        let at = r.pos;
        let op = r.u8("an opcode").map_err(|_| "truncated pickle: no STOP opcode".to_string())?;
        let mut created: Option<Item> = None;
        match op {
            0x80 => {
                r.u8("PROTO")?;
            }
            b'c' => {
                let module = r.line()?;
                let name = r.line()?;
                if !ALLOWED_GLOBALS.iter().any(|&(m, n)| m == module && n == name) {
                    return Err(refused_global(&module, &name));
                }
                let kind =
                    if module == "collections" && name == "OrderedDict" { Kind::OrderedDictClass } else { Kind::Other };
                created = Some(Item::text(kind, module.len() + name.len()));
            }
            b'K' => {
                r.take(1, "BININT1")?;
                created = Some(Item::leaf(Kind::Other));
            }
            b'M' => {
                r.take(2, "BININT2")?;
                created = Some(Item::leaf(Kind::Other));
            }
            b'J' => {
                r.take(4, "BININT")?;
                created = Some(Item::leaf(Kind::Other));
            }
            b'G' => {
                r.take(8, "BINFLOAT")?;
                created = Some(Item::leaf(Kind::Other));
            }
            0x8a => {
                let n = r.u8("LONG1")? as usize;
                if n > 8 {
                    return Err(format!(
                        "malformed pickle: LONG1 of {n} bytes at byte {at} (at most 8 fit in 64 bits)"
                    ));
                }
                r.take(n, "LONG1")?;
                created = Some(Item::text(Kind::Other, n));
            }
            b'X' => {
                let len = r.u32("BINUNICODE")? as usize;
                let text = r.take(len, "BINUNICODE")?;
                if std::str::from_utf8(text).is_err() {
                    return Err(format!("malformed pickle: BINUNICODE at byte {at} is not UTF-8"));
                }
                created = Some(Item::text(Kind::Other, len));
            }
            b'Q' => {
                let id = pop(&mut stack, at)?;
                created = Some(container(Kind::Other, &[id]));
            }
            b't' => {
                let items = pop_to_mark(&mut stack, at)?;
                created = Some(container(Kind::Other, &items));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(pop(&mut stack, at)?);
                }
                created = Some(container(Kind::Other, &items));
            }
            0x88 | 0x89 | b'N' | b')' => created = Some(Item::leaf(Kind::Other)),
            b']' => created = Some(Item::leaf(Kind::List)),
            // candle reads DICT ('d') as EMPTY_DICT.
            b'}' | b'd' => created = Some(Item::leaf(Kind::Dict)),
            b'(' => created = Some(Item::leaf(Kind::Mark)),
            b'a' | b'e' | b's' | b'u' => {
                let items = match op {
                    b'a' => vec![pop(&mut stack, at)?],
                    b's' => {
                        let value = pop(&mut stack, at)?;
                        let key = pop(&mut stack, at)?;
                        vec![key, value]
                    }
                    _ => pop_to_mark(&mut stack, at)?,
                };
                let want = if matches!(op, b'a' | b'e') { Kind::List } else { Kind::Dict };
                if matches!(op, b'u') && items.len() % 2 != 0 {
                    return Err(format!("malformed pickle: SETITEMS with an odd number of items at byte {at}"));
                }
                let target = stack.last_mut().ok_or_else(|| format!("malformed pickle: empty stack at byte {at}"))?;
                if target.kind != want {
                    return Err(format!(
                        "malformed pickle: opcode {:?} at byte {at} applied to a non-container",
                        op as char
                    ));
                }
                target.objects += items.iter().map(|i| i.objects).sum::<u64>();
                target.bytes = items.iter().map(|i| i.bytes).fold(target.bytes, u64::saturating_add);
                target.depth = target.depth.max(1 + items.iter().map(|i| i.depth).max().unwrap_or(0));
                check_depth(target.depth, at)?;
            }
            b'b' => {
                let args = pop(&mut stack, at)?;
                let obj = pop(&mut stack, at)?;
                let kind = if obj.kind == Kind::Dict && args.kind == Kind::Dict { Kind::Dict } else { Kind::Other };
                created = Some(container(kind, &[obj, args]));
            }
            b'R' | 0x81 => {
                let args = pop(&mut stack, at)?;
                let callable = pop(&mut stack, at)?;
                created = Some(if op == b'R' && callable.kind == Kind::OrderedDictClass {
                    Item::leaf(Kind::Dict)
                } else {
                    container(Kind::Other, &[callable, args])
                });
            }
            b'h' | b'j' => {
                let id = if op == b'h' { r.u8("BINGET")? as u32 } else { r.u32("LONG_BINGET")? };
                let item =
                    *memo.get(&id).ok_or_else(|| format!("malformed pickle: memo {id} is empty at byte {at}"))?;
                created = Some(item);
            }
            b'q' | b'r' => {
                let id = if op == b'q' { r.u8("BINPUT")? as u32 } else { r.u32("LONG_BINPUT")? };
                let top =
                    *stack.last().ok_or_else(|| format!("malformed pickle: BINPUT on an empty stack at byte {at}"))?;
                // candle stores a deep copy.
                total += top.objects;
                total_bytes = total_bytes.saturating_add(top.bytes);
                memo.insert(id, top);
            }
            b'.' => {
                if stack.is_empty() {
                    return Err("malformed pickle: STOP with an empty stack".into());
                }
                return Ok(());
            }
            other => {
                return Err(format!(
                    "unknown op-code {other} (0x{other:02x}) at byte {at} (PyTorch writes protocol 2 pickles)"
                ))
            }
        }
        if let Some(item) = created {
            total += item.objects;
            total_bytes = total_bytes.saturating_add(item.bytes);
            check_depth(item.depth, at)?;
            stack.push(item);
        }
        if total > MAX_OBJECTS {
            return Err(format!(
                "the pickle builds more than {MAX_OBJECTS} objects (memo copies included) by byte {at}; \
                 a state dict needs far fewer"
            ));
        }
        if total_bytes > max_bytes {
            return Err(format!(
                "the pickle builds more than {max_bytes} bytes of text (memo copies included) by byte {at}, \
                 more than twice its own size of {} bytes; a state dict builds far less",
                bytes.len()
            ));
        }
    }
}

fn check_depth(depth: usize, at: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("the pickle nests objects more than {MAX_DEPTH} deep (at byte {at})"));
    }
    Ok(())
}

fn refused_global(module: &str, name: &str) -> String {
    let storage = module == "torch" && name.ends_with("Storage");
    if storage {
        return format!(
            "`{module}.{name}`: tensors of this storage type cannot be read (float32, float64, float16, \
             bfloat16, uint8 and int64 can)"
        );
    }
    format!(
        "refusing to load: data.pkl references `{module}.{name}`, which is not one of the tensor-rebuilding \
         functions a state dict uses. A pickle that references other callables can run arbitrary code when \
         torch.load opens it; nothing was executed here. Use a .safetensors file, or re-save the weights from \
         a trusted copy"
    )
}

fn class_name(object: &Object) -> Option<(&str, &str)> {
    match object {
        Object::Class { module_name, class_name } => Some((module_name, class_name)),
        _ => None,
    }
}

fn tuple<'a>(object: &'a Object, what: &str, name: &str) -> Result<&'a [Object], String> {
    match object {
        Object::Tuple(items) => Ok(items),
        _ => Err(format!("tensor `{name}`: {what} is not a tuple")),
    }
}

fn non_negative(object: &Object) -> Option<u64> {
    match *object {
        Object::Int(v) if v >= 0 => Some(v as u64),
        Object::Long(v) if v >= 0 => Some(v as u64),
        _ => None,
    }
}

fn dims(object: &Object, what: &str, name: &str) -> Result<Vec<u64>, String> {
    tuple(object, what, name)?
        .iter()
        .map(|d| match *d {
            Object::Int(v) if v >= 0 => Ok(v as u64),
            _ => Err(format!("tensor `{name}`: {what} holds {d:?}, not a non-negative int")),
        })
        .collect()
}

/// The structure candle's `read_pth_tensor_info` indexes into, for every tensor of the state dict.
fn check_state_dict(object: &Object) -> Result<(), String> {
    let Object::Dict(entries) = object else {
        return Err("data.pkl holds no state dict (a dict of tensors)".into());
    };
    for (key, value) in entries {
        let Object::Unicode(name) = key else { continue };
        let Object::Reduce { callable, args } = value else { continue };
        let (mut callable, mut args) = (callable.as_ref(), args.as_ref());
        match class_name(callable) {
            Some(("torch._tensor", "_rebuild_from_type_v2")) => {
                let items = tuple(args, "the _rebuild_from_type_v2 arguments", name)?;
                if items.len() < 3 {
                    return Err(format!(
                        "tensor `{name}`: _rebuild_from_type_v2 needs 3 arguments, got {}",
                        items.len()
                    ));
                }
                (callable, args) = (&items[0], &items[2]);
            }
            Some(("torch._utils", "_rebuild_parameter")) => {
                let items = tuple(args, "the _rebuild_parameter arguments", name)?;
                match items.first() {
                    Some(Object::Reduce { callable: c, args: a }) => (callable, args) = (c.as_ref(), a.as_ref()),
                    _ => return Err(format!("tensor `{name}`: _rebuild_parameter does not wrap a tensor")),
                }
            }
            _ => {}
        }
        if class_name(callable) != Some(("torch._utils", "_rebuild_tensor_v2")) {
            continue; // candle skips entries that are not tensors
        }
        check_rebuild_tensor(args, name)?;
    }
    Ok(())
}

/// `_rebuild_tensor_v2(storage, storage_offset, size, stride, …)` with
/// `storage = persistent_load(("storage", StorageType, key, location, numel))`.
fn check_rebuild_tensor(args: &Object, name: &str) -> Result<(), String> {
    let items = tuple(args, "the _rebuild_tensor_v2 arguments", name)?;
    if items.len() < 4 {
        return Err(format!("tensor `{name}`: _rebuild_tensor_v2 needs at least 4 arguments, got {}", items.len()));
    }
    let storage = match &items[0] {
        Object::PersistentLoad(id) => tuple(id, "the storage record", name)?,
        _ => return Err(format!("tensor `{name}`: the storage is not a persistent id")),
    };
    if storage.len() < 5 {
        return Err(format!("tensor `{name}`: the storage record has {} fields, expected 5", storage.len()));
    }
    if !matches!(storage[2], Object::Unicode(_)) {
        return Err(format!("tensor `{name}`: the storage key is not a string"));
    }
    let storage_numel = non_negative(&storage[4])
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| format!("tensor `{name}`: bad storage size {:?}", storage[4]))?;
    let offset = non_negative(&items[1])
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| format!("tensor `{name}`: bad storage offset {:?}", items[1]))?;
    let size = dims(&items[2], "the size", name)?;
    let stride = dims(&items[3], "the stride", name)?;
    if size.len() != stride.len() {
        return Err(format!("tensor `{name}`: size {size:?} and stride {stride:?} differ in rank"));
    }
    let mut numel: u64 = 1;
    let mut last: u64 = 0; // largest index reached, relative to the offset
    for (&d, &s) in size.iter().zip(&stride) {
        numel = numel.checked_mul(d).filter(|&n| n <= MAX_ELEMENTS).ok_or_else(|| too_big(name, &size))?;
        if d > 0 {
            last = (d - 1).checked_mul(s).and_then(|x| x.checked_add(last)).ok_or_else(|| too_big(name, &size))?;
        }
    }
    if numel > 0 && offset.checked_add(last).is_none_or(|end| end >= storage_numel) {
        return Err(format!(
            "tensor `{name}`: shape {size:?} with strides {stride:?} at offset {offset} reads past the end of its \
             storage of {storage_numel} elements"
        ));
    }
    Ok(())
}

fn too_big(name: &str, size: &[u64]) -> String {
    format!("tensor `{name}`: shape {size:?} has more than {MAX_ELEMENTS} elements")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unicode(s: &str) -> Vec<u8> {
        let mut out = vec![b'X'];
        out.extend((s.len() as u32).to_le_bytes());
        out.extend(s.as_bytes());
        out
    }

    /// `{name: _rebuild_tensor_v2(storage, 0, shape, stride, False, OrderedDict())}` with `args` items.
    fn tensor_entry(name: &str, args: usize) -> Vec<u8> {
        let mut out = unicode(name);
        out.extend(b"ctorch._utils\n_rebuild_tensor_v2\n(");
        let parts: Vec<Vec<u8>> = vec![
            [
                b"(".to_vec(),
                unicode("storage"),
                b"ctorch\nFloatStorage\n".to_vec(),
                unicode("0"),
                unicode("cpu"),
                b"K\x04tQ".to_vec(),
            ]
            .concat(),
            b"K\x00".to_vec(),
            b"(K\x02K\x02t".to_vec(),
            b"(K\x02K\x01t".to_vec(),
            b"\x89".to_vec(),
        ];
        for p in parts.iter().take(args) {
            out.extend(p);
        }
        out.extend(b"tR");
        out
    }

    fn state_dict(entries: &[Vec<u8>]) -> Vec<u8> {
        let mut out = b"\x80\x02}(".to_vec();
        for e in entries {
            out.extend(e);
        }
        out.extend(b"u.");
        out
    }

    #[test]
    fn a_state_dict_passes() {
        check_pickle(&state_dict(&[tensor_entry("w", 5)])).unwrap();
    }

    #[test]
    fn code_globals_are_refused() {
        // What `pickle.dumps(Evil(), protocol=2)` writes for `__reduce__ = (os.system, ("touch x",))`.
        let evil =
            [b"\x80\x02cposix\nsystem\nq\x00".to_vec(), unicode("touch x"), b"\x85q\x01Rq\x02.".to_vec()].concat();
        let err = check_pickle(&evil).unwrap_err();
        assert!(err.contains("`posix.system`") && err.contains("nothing was executed"), "{err}");
    }

    #[test]
    fn short_argument_tuples_are_refused() {
        let err = check_pickle(&state_dict(&[tensor_entry("w", 0)])).unwrap_err();
        assert!(err.contains("needs at least 4 arguments"), "{err}");
    }

    #[test]
    fn deep_nesting_and_memo_bombs_are_refused() {
        let mut deep = b"\x80\x02N".to_vec();
        deep.extend(std::iter::repeat_n(0x85u8, 100_000));
        deep.push(b'.');
        assert!(check_pickle(&deep).unwrap_err().contains("nests objects"));

        let mut bomb = b"\x80\x02]q\x00".to_vec();
        for _ in 0..40 {
            bomb.extend(b"h\x00h\x00\x86q\x00");
        }
        bomb.push(b'.');
        let err = check_pickle(&bomb).unwrap_err();
        assert!(err.contains("objects") || err.contains("nests"), "{err}");
    }

    #[test]
    fn memo_fetches_of_large_strings_are_bounded_by_the_pickle_size() {
        // A 2 MiB string memoised once and fetched 200 times, in a list.
        let mut p = b"\x80\x02]q\x00X".to_vec();
        p.extend((2u32 << 20).to_le_bytes());
        p.extend(std::iter::repeat_n(b'a', 2 << 20));
        p.extend(b"q\x01(");
        p.extend(std::iter::repeat_n(*b"h\x01", 200).flatten());
        p.extend(b"e.");
        let err = check_pickle(&p).unwrap_err();
        assert!(err.contains("bytes of text"), "{err}");
        // Memoised but not fetched it stays within twice the pickle's size, and passes the scan (the
        // state-dict check then refuses a list).
        let mut ok = b"\x80\x02]q\x00X".to_vec();
        ok.extend((2u32 << 20).to_le_bytes());
        ok.extend(std::iter::repeat_n(b'a', 2 << 20));
        ok.extend(b"q\x01a.");
        let err = check_pickle(&ok).unwrap_err();
        assert!(!err.contains("bytes of text"), "{err}");
    }

    #[test]
    fn lengths_are_checked_before_allocating() {
        let err = check_pickle(b"\x80\x02X\xff\xff\xff\xff").unwrap_err();
        assert!(err.contains("truncated pickle"), "{err}");
        let err = check_pickle(b"\x80\x02\x8a\xff").unwrap_err();
        assert!(err.contains("LONG1"), "{err}");
    }
}
