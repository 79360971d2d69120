"""What a VM identifier, a host name and a label value may be, wherever they enter.

VM UUIDs and host names reach the global manager in Neat's form, where ``vm_uuids`` is a
comma-separated list: a "UUID" holding commas would name several VMs. They come from alert labels
(the bridge), file names in Neat's data directory (the directory source) and the decision loop
(the global manager client checks what it sends). Each of those checks them here, so every door
applies the same rules.
"""

from __future__ import annotations

import re
import unicodedata

from neat_exporter.errors import InputError

MAX_LABEL_LENGTH = 1024
"""Characters in an alert label's name or value; Prometheus sets no limit, real labels are far
shorter, and a longer one would only flood logs and requests."""

MAX_HOST_NAME_LENGTH = 255
"""A DNS name's limit, which Nova's host names follow."""

MAX_INFO_LABEL_LENGTH = 256
"""Characters of a label value describing a VM (its domain name, Nova's instance, project and
flavor names and IDs). Nova's own limit for names is 255, so no real value is cut; a longer one
(metadata written by other tools, or a hostile tenant's) would bloat every scrape and can make
Prometheus refuse the whole scrape when it sets a ``label_value_length_limit``."""

_CUT_MARK = "..."

_VM_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
# Control characters (Cc, CR and LF among them), lone surrogates (Cs: not text at all, they cannot
# be encoded), line and paragraph separators (Zl, Zp: line breaks to some log viewers).
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


def is_vm_uuid(value: str) -> bool:
    """A UUID in its canonical 8-4-4-4-12 hexadecimal form, as Nova and libvirt write it."""
    return _VM_UUID.fullmatch(value) is not None


def check_vm_uuid(value: str) -> str:
    """``value`` if it is a VM UUID; InputError otherwise."""
    if not is_vm_uuid(value):
        raise InputError(f"not a VM UUID: {shown(value)}")
    return value


def check_host_name(value: str) -> str:
    """``value`` if it can name a hypervisor host: non-empty, at most 255 characters, no control
    characters (nor lone surrogates, line or paragraph separators); InputError otherwise."""
    if not value:
        raise InputError("empty host name")
    if len(value) > MAX_HOST_NAME_LENGTH:
        raise InputError(f"host name longer than {MAX_HOST_NAME_LENGTH} characters")
    if value.isascii() and value.isprintable():
        return value  # the usual case, without a look at each character
    for character in value:
        if unicodedata.category(character) in _FORBIDDEN_CATEGORIES:
            raise InputError(f"host name with {shown(character)} in it: {shown(value)}")
    return value


def check_label(name: str, value: str) -> None:
    """InputError unless ``name`` and ``value`` are text (no lone surrogates) of at most
    :data:`MAX_LABEL_LENGTH` characters."""
    for text, what in ((name, "name"), (value, "value")):
        if len(text) > MAX_LABEL_LENGTH:
            raise InputError(
                f"label {shown(name)}: {what} longer than {MAX_LABEL_LENGTH} characters"
            )
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise InputError(f"label {shown(name)}: {what} is not valid Unicode") from None


def bounded_label_value(value: str) -> str:
    """``value``, or when it is longer than :data:`MAX_INFO_LABEL_LENGTH` its beginning ending
    in "...", that long in all: the VM is still shown, and recognisable by the start of its name."""
    if len(value) <= MAX_INFO_LABEL_LENGTH:
        return value
    return value[: MAX_INFO_LABEL_LENGTH - len(_CUT_MARK)] + _CUT_MARK


def shown(value: str, limit: int = 60) -> str:
    """``value`` quoted for a log line or an error message: control characters and lone
    surrogates escaped (a CR or LF cannot forge a line), at most ``limit`` characters of it."""
    cut = value[:limit]
    return repr(cut) if cut == value else repr(cut) + "..."
