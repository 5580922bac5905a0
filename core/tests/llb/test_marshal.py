"""The canonical encoder: the cases where naive protobuf encoders differ from Go's bytes."""

from __future__ import annotations

from llbkit.core.llb import marshal, pb


def test_map_keys_sort_bytewise_even_when_one_is_a_prefix():
    meta = pb.OpMetadata()
    for key in ("source.local.excludepatterns", "source.local", "source.local.unique", "a"):
        meta.caps[key] = True
    data = marshal(meta)
    order = [
        k for k in ("a", "source.local", "source.local.excludepatterns", "source.local.unique")
    ]
    positions = [data.index(b"\n" + bytes([len(k)]) + k.encode()) for k in order]
    assert positions == sorted(positions)


def test_map_entries_carry_key_and_value_even_when_empty():
    op = pb.SourceOp(identifier="x")
    op.attrs[""] = ""
    assert marshal(op) == b"\n\x01x" + b"\x12\x04\n\x00\x12\x00"


def test_oneof_member_set_to_zero_is_written():
    assert marshal(pb.UserOpt(byID=0)) == b"\x10\x00"
    assert marshal(pb.UserOpt()) == b""


def test_negative_indexes_are_ten_byte_varints():
    assert marshal(pb.Mount(input=-1)) == b"\x08" + b"\xff" * 9 + b"\x01"
    assert marshal(pb.FileActionCopy(mode=-1)) == b"\x20" + b"\xff" * 9 + b"\x01"


def test_present_empty_message_is_written_and_absent_is_not():
    op = pb.Op()
    op.constraints.SetInParent()
    assert marshal(op) == b"\x5a\x00"
    assert marshal(pb.Op()) == b""


def test_zero_scalars_are_skipped_and_fields_follow_number_order():
    mount = pb.Mount(dest="/", output=0, readonly=False, mountType=pb.BIND)
    mount.cacheOpt.ID = "c"
    assert marshal(mount) == b"\x1a\x01/" + b"\xa2\x01\x03\n\x01c"


def test_packed_repeated_numbers():
    assert marshal(pb.PassthroughOp(outputs=[1, 2, 300])) == b"\x12\x04\x01\x02\xac\x02"


def test_unknown_fields_survive_a_round_trip():
    data = b"\n\x01x" + b"\xf8\x07\x05"  # identifier "x", then unknown field 127 = 5
    op = pb.SourceOp.FromString(data)
    assert marshal(op) == data
