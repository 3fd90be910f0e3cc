"""A hypercall fuzzer's machine: the real monitor launched under bare-metal x86 code that
executes a table of hypercalls as a hostile host would, with real VMCALL and ENCLU from CPL 0
and CPL 3, while Python checks the monitor's invariants after every single call.

The guest loop reads 64-byte records from TABLE: mode (0 = VMCALL at CPL 0, 1 = VMCALL at
CPL 3, 2 = ENCLU at CPL 3), then RAX, RDI, RSI, RDX, RBX, RCX, and writes back the result: RAX,
or the vector of the fault the host took. A victim enclave holding a secret is built first
(ECREATE/EADD/EINIT by the same loop); the structures of a second enclave (whose code loads
its secret into every register and faults) lie ready for the fuzzer to build, enter and
destroy in any order. After every call (an OUT to port 0xEB) the checker asserts:

- the victim's EPC pages and every initialized enclave's MRENCLAVE are unchanged, unless the
  enclave was destroyed, in which case its pages are zero (scrubbed);
- no EPC or monitor byte is reachable from the host: each probed address translates, through
  the host's page tables and the EPT, to the monitor's read-only zero page, which stays zero;
- at every fault the host takes (port 0xEC, before the handler touches a register) no
  general-purpose register holds either enclave's secret (AEX scrubs them).

A Python exception from the monitor propagates out of `run` as `MonitorCrashed` naming the
call that raised it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from hypothesis import strategies as st

from hyperenclave.vmm.hypercall import HypercallCode
from hyperenclave.vmm.sgx import PageFlags, PageType, SecInfo, Tcs
from tests.support.asm import assemble
from tests.support.baremetal import KERNEL, KSTACK, PML4, UCS, UDS, USER, USTACK, BareMetal
from tests.unit.test_enclave_lifecycle import (BASE, PAGEINFOS, SECS_EPC, SECS_SRC, SIGSTRUCT,
                                               mrenclave, place, secs, signed)
from tests.unit.test_monitor_launch import EPC, HV, HV_SIZE, machine

R, W, X = PageFlags.R, PageFlags.W, PageFlags.X
LOOP, HANDLERS = 0x120000, 0x130000
CURSOR = 0x5F0000                  # u64 next index, u64 count, u64 address of the current record
TABLE, RECORD = 0x1000000, 64
MAX_RECORDS = (HV - TABLE) // RECORD
SHARED_RANGES = 0x505000           # {secs, start, end} structs for SHARED_MEMORY_ADD
SHARED = 0x600000                  # ordinary app RAM the fuzzer may share
VICTIM_SECRET = 0x5EC2E7_0F_71C7_1A01
B_SECRET = 0x5EC2E7_0F_B0B0_B0B0
FAULT = 1 << 63                    # result = FAULT | vector: the host took that exception

# enclave B: its own ELRANGE, EPC (2 MiB further) and driver structures
B_BASE, B_EPC = 0x2000_0000, EPC + 0x200000
B_SECS_EPC = B_EPC + 0xF000
B_SECS_SRC, B_PAGEINFOS, B_SECINFOS, B_SOURCES, B_SIGSTRUCT = (0x540000, 0x542000, 0x544000,
                                                                0x550000, 0x570000)
ENCLU_EENTER, ENCLU_ERESUME = 2, 3


def victim_pages() -> list[tuple[int, PageType, int, bytes]]:
    """TCS, code that only EEXITs (touching no secret), the secret, two SSA frames."""
    code = assemble("mov %rcx, %rbx ; mov $4, %eax ; enclu", BASE + 0x1000).ljust(4096, b"\xcc")
    return [(0x0000, PageType.PT_TCS, 0, Tcs(ossa=0x3000, nssa=2, oentry=0x1000).pack()),
            (0x1000, PageType.PT_REG, R | X, code),
            (0x2000, PageType.PT_REG, R | W, struct.pack("<Q", VICTIM_SECRET) * 512),
            (0x3000, PageType.PT_REG, R | W, bytes(4096)),
            (0x4000, PageType.PT_REG, R | W, bytes(4096))]


def b_pages() -> list[tuple[int, PageType, int, bytes]]:
    """Code that loads its secret into every general-purpose register, then faults (#UD):
    each entry is an AEX, which must scrub them all before the host runs."""
    regs = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10", "r11", "r12",
            "r13", "r14", "r15"]
    source = f"movabs ${B_BASE + 0x2000:#x}, %rsp\n" + "".join(
        f"mov (%rsp), %{r}\n" for r in regs) + "mov (%rsp), %rsp\nud2\n"
    code = assemble(source, B_BASE + 0x1000).ljust(4096, b"\xcc")
    return [(0x0000, PageType.PT_TCS, 0, Tcs(ossa=0x3000, nssa=2, oentry=0x1000).pack()),
            (0x1000, PageType.PT_REG, R | X, code),
            (0x2000, PageType.PT_REG, R | W, struct.pack("<Q", B_SECRET) * 512),
            (0x3000, PageType.PT_REG, R | W, bytes(4096)),
            (0x4000, PageType.PT_REG, R | W, bytes(4096))]


# The call's registers from its table row at R13 (RAX, RDI, RSI, RDX, RBX, RCX), at CPL 0 and 3.
LOAD_CALL = """    mov 8(%r13), %rax
    mov 16(%r13), %rdi
    mov 24(%r13), %rsi
    mov 32(%r13), %rdx
    mov 40(%r13), %rbx
    mov 48(%r13), %rcx"""
GUEST_LOOP = f"""
loop:
    movabs ${KSTACK - 0x100}, %rsp
    movabs ${CURSOR}, %r15
    mov (%r15), %r14
    cmp 8(%r15), %r14
    jae done
    lea 1(%r14), %r13
    mov %r13, (%r15)
    shl $6, %r14
    movabs ${TABLE}, %r13
    add %r14, %r13
    mov %r13, 16(%r15)
    movl (%r13), %eax
    test %eax, %eax
    jnz user
{LOAD_CALL}
    vmcall
    movabs ${CURSOR}, %r15
    mov 16(%r15), %r13
    mov %rax, 56(%r13)
    out %al, $0xeb
    jmp loop
user:
    pushq ${UDS} ; pushq ${USTACK - 0x80} ; pushq $0x3202 ; pushq ${UCS} ; pushq ${USER} ; iretq
done:
    mov $0x2000, %ax ; out %ax, $0xea
1:  jmp 1b
"""
GUEST_USER = f"""
    movabs ${CURSOR + 16}, %r15
    mov (%r15), %r13
    movl (%r13), %r12d
{LOAD_CALL}
    cmp $2, %r12d
    je 2f
    vmcall
    jmp 3f
2:  enclu
3:  movabs ${CURSOR + 16}, %r15
    mov (%r15), %r13
    mov %rax, 56(%r13)
    out %al, $0xeb
    int $0x80
"""


def handler(vector: int) -> str:
    """Report the registers the host sees (port 0xEC), record the fault, next call."""
    return f"""
    out %al, $0xec
    movabs ${CURSOR + 16}, %r15
    mov (%r15), %r13
    movabs ${FAULT | vector:#x}, %rax
    mov %rax, 56(%r13)
    out %al, $0xeb
    movabs ${LOOP}, %rax
    jmp *%rax
"""


@dataclass(frozen=True)
class Call:
    mode: int                      # 0: VMCALL at CPL 0, 1: VMCALL at CPL 3, 2: ENCLU at CPL 3
    rax: int
    rdi: int = 0
    rsi: int = 0
    rdx: int = 0
    rbx: int = 0
    rcx: int = 0

    def pack(self) -> bytes:
        return struct.pack("<I4x7Q", self.mode, self.rax, self.rdi, self.rsi, self.rdx, self.rbx,
                           self.rcx, 0)


class MonitorCrashed(Exception):
    """The monitor raised a Python exception while handling a guest's call."""


class InvariantBroken(AssertionError):
    pass


def _build_calls(pageinfos: int, secs_epc: int, epc: int, n_pages: int,
                 sigstruct: int) -> list[Call]:
    return [Call(0, HypercallCode.ENCLAVE_CREATE, pageinfos, secs_epc)] + [
        Call(0, HypercallCode.ENCLAVE_ADD_PAGE, pageinfos + 32 * i, (epc + off) | 1)
        for i, off in enumerate(range(0, n_pages * 0x1000, 0x1000), 1)] + [
        Call(0, HypercallCode.ENCLAVE_INIT, secs_epc, sigstruct)]


def build_b() -> list[Call]:
    """The calls that build enclave B legitimately (the fuzzer may use any of them)."""
    return _build_calls(B_PAGEINFOS, B_SECS_EPC, B_EPC, len(b_pages()), B_SIGSTRUCT)


@dataclass
class Checker:
    """The invariants, checked by the guest's OUTs after each call and at each fault."""

    bm: BareMetal
    victim: dict[int, bytes]                       # EPC address -> the page when initialized
    probes: list[int]
    mr: dict[int, bytes] = field(default_factory=dict)   # SECS -> MRENCLAVE at EINIT
    calls_checked: int = 0
    faults_seen: int = 0
    ports = range(0xEB, 0xED)

    def port_read(self, port: int, size: int) -> int:
        return 0

    def port_write(self, port: int, size: int, value: int) -> None:
        if port == 0xEC:
            self.faults_seen += 1
            self.check_registers()
        else:
            self.calls_checked += 1
            self.check_after_call()

    def check_registers(self) -> None:
        cpu = self.bm.cpu
        for name in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10",
                     "r11", "r12", "r13", "r14", "r15"):
            if cpu.reg(name) in (VICTIM_SECRET, B_SECRET):
                raise InvariantBroken(f"the host sees an enclave secret in {name} at a fault")

    def check_after_call(self) -> None:
        mon, mem = self.bm.cpu.vmx_root, self.bm.memory
        alive = mon.enabled and SECS_EPC in mon.enclaves.enclaves
        for pa, page in self.victim.items():
            now = mem.read(pa, 4096)
            if now != (page if alive else bytes(4096)):
                raise InvariantBroken(f"victim page {pa:#x} changed" if alive else
                                      f"destroyed victim page {pa:#x} was not scrubbed")
        if mon.enabled:
            for secs_pa, enclave in mon.enclaves.enclaves.items():
                if enclave.initialized:
                    measured = self.mr.setdefault(secs_pa, enclave.secs.mr_enclave)
                    if enclave.secs.mr_enclave != measured:
                        raise InvariantBroken(f"MRENCLAVE of {secs_pa:#x} changed after EINIT")
            for secs_pa in set(self.mr) - set(mon.enclaves.enclaves):
                del self.mr[secs_pa]
            zero = mon.layout.zero_page
            for va in self.probes:
                hpa, perms = self.bm.cpu.translate(va)
                if not zero <= hpa < zero + (2 << 20) or perms & 2:
                    raise InvariantBroken(f"host address {va:#x} reaches {hpa:#x} (perms {perms})")
            if mem.read(zero, 4096).count(0) != 4096:
                raise InvariantBroken("the zero page is no longer zero")


class HypercallFuzzer:
    """One machine: monitor launched, victim enclave initialized, B's structures in place."""

    def __init__(self, monitor_image: bytes, key) -> None:
        bm, mon = machine(monitor_image, f"movabs ${LOOP}, %rax ; jmp *%rax")
        self.bm, self.monitor = bm, mon
        self.started = False
        mem = bm.memory
        bm.load(LOOP, GUEST_LOOP)
        bm.load(USER, GUEST_USER)
        for vector in range(32):
            bm.set_gate(vector, bm_load(bm, HANDLERS + 0x100 * vector, handler(vector)))
        bm.set_gate(0x80, bm_load(bm, HANDLERS + 0x100 * 0x80, f"movabs ${LOOP}, %rax ; jmp *%rax"),
                    dpl=3)
        victim, b = victim_pages(), b_pages()
        place(mem, secs(), victim)
        mem.write(SIGSTRUCT, signed(key, mrenclave(victim)))
        # B's driver structures, as `place` lays out the victim's
        mem.write(B_SECS_SRC, secs(base=B_BASE).pack())
        mem.write(B_SECINFOS, SecInfo.of(PageType.PT_SECS, 0).pack())
        mem.write(B_PAGEINFOS, struct.pack("<QQQQ", 0, B_SECS_SRC, B_SECINFOS, 0))
        for i, (offset, ptype, flags, data) in enumerate(b, start=1):
            mem.write(B_SECINFOS + 64 * i, SecInfo.of(ptype, flags).pack())
            mem.write(B_SOURCES + 0x1000 * i, data)
            mem.write(B_PAGEINFOS + 32 * i, struct.pack("<QQQQ", B_BASE + offset,
                                                        B_SOURCES + 0x1000 * i,
                                                        B_SECINFOS + 64 * i, B_SECS_EPC))
        mem.write(B_SIGSTRUCT, signed(key, mrenclave(b)))
        # the apps' mappings of both ELRANGEs (2 MiB pages onto their EPC)
        mem.write_u64(PML4 + 0x2000 + 8 * (BASE >> 21), EPC | 0x87)
        mem.write_u64(PML4 + 0x2000 + 8 * (B_BASE >> 21), B_EPC | 0x87)
        for k, (s, lo, hi) in enumerate(self.shared_ranges()):
            mem.write(SHARED_RANGES + 24 * k, struct.pack("<QQQ", s, lo, hi))
        probes = [BASE + off for off, *_ in victim] + [B_BASE + off for off, *_ in b] + [
            EPC, SECS_EPC, B_SECS_EPC, EPC + 0x123000, HV, HV + 0x800000, HV + HV_SIZE - 0x1000]
        self.checker = Checker(bm, {}, probes)
        bm.bus.add_port_device(self.checker)
        setup = self.run(_build_calls(PAGEINFOS, SECS_EPC, EPC, len(victim), SIGSTRUCT))
        if setup != [0] * len(setup):
            raise RuntimeError(f"victim enclave not built: {setup}\n" + "\n".join(mon.log_lines))
        self.checker.victim = {EPC + off: mem.read(EPC + off, 4096) for off, *_ in victim}
        self.checker.victim[SECS_EPC] = mem.read(SECS_EPC, 4096)
        self.checker.calls_checked = self.checker.faults_seen = 0

    @staticmethod
    def shared_ranges() -> list[tuple[int, int, int]]:
        """{secs, start, end}: ordinary RAM (legitimate), EPC, ELRANGE, monitor memory, the
        other enclave's ELRANGE, too big, not aligned, not an enclave."""
        return [(SECS_EPC, SHARED, SHARED + 0x1000), (SECS_EPC, EPC, EPC + 0x1000),
                (SECS_EPC, BASE, BASE + 0x1000), (SECS_EPC, HV, HV + 0x1000),
                (SECS_EPC, B_BASE, B_BASE + 0x1000), (SECS_EPC, SHARED, SHARED + 0x100000),
                (SECS_EPC, SHARED + 8, SHARED + 0x1008), (B_SECS_EPC, SHARED + 0x1000,
                                                           SHARED + 0x2000),
                (EPC + 0x5000, SHARED, SHARED + 0x1000)]

    def run(self, calls: list[Call]) -> list[int]:
        """Issue the calls in order from the guest; the result of each (RAX, or FAULT|vector)."""
        if len(calls) > MAX_RECORDS:
            raise ValueError(f"at most {MAX_RECORDS} calls per run")
        bm, mem = self.bm, self.bm.memory
        mem.write(TABLE, b"".join(c.pack() for c in calls))
        mem.write(CURSOR, struct.pack("<QQQ", 0, len(calls), TABLE))
        bm.bus.stop_requested = None
        bm.cpu.rip = LOOP if self.started else KERNEL   # later runs: the loop, at CPL 0
        self.started = True
        try:
            while not bm.bus.stop_requested:
                bm.cpu.run_slice(20_000)
        except InvariantBroken:
            raise
        except Exception as err:
            index = struct.unpack_from("<Q", mem.read(CURSOR, 8))[0] - 1
            raise MonitorCrashed(f"{type(err).__name__}: {err} at call {index}: "
                                 f"{calls[index] if 0 <= index < len(calls) else '?'}") from err
        data = mem.read(TABLE, RECORD * len(calls))
        return [struct.unpack_from("<Q", data, RECORD * i + 56)[0] for i in range(len(calls))]


def bm_load(bm: BareMetal, addr: int, source: str) -> int:
    bm.load(addr, source)
    return addr


# ---------------------------------------------------------------- Hypothesis strategies
# Kept here so the CI test and the nightly benchmark fuzz with the same vocabulary.

CODES = [int(c) for c in HypercallCode] + [0x15, 0x16, 0x18, 0x23, 0x28, 0x105, 0x202,
                                           0x4000_0000, 0x8000_0006, 0x8000_4000, 0x1_0000_0010]
POINTERS = [0, 1, 8, 0xFFF, SECS_EPC, SECS_EPC + 8, EPC, EPC + 0x1000, EPC + 0x2000,
            EPC + 0x3000, B_SECS_EPC, B_EPC + 0x1000, EPC + 0x5000, EPC + 0xFFF000, HV,
            HV + 0x800000, HV + HV_SIZE - 8, PAGEINFOS, PAGEINFOS + 32, PAGEINFOS + 33,
            B_PAGEINFOS, B_PAGEINFOS + 64, SIGSTRUCT, B_SIGSTRUCT, SECS_SRC, SHARED, BASE,
            BASE + 0x1000, BASE + 0x2000, B_BASE, B_BASE + 0x2000, USER, KSTACK - 8,
            SHARED_RANGES, 64 << 20, (64 << 20) - 8, 1 << 47, 0xFFFF_8000_0000_0000,
            0x8000_0000_0000_0000, (1 << 64) - 1, (1 << 64) - 8]
SHARED_RANGE_ARGS = [SHARED_RANGES + 24 * k for k in range(len(HypercallFuzzer.shared_ranges()))]
TCS_LIKE = [BASE, B_BASE, BASE + 0x1000, BASE + 0x2000, B_BASE + 0x10, BASE + 0x10000, 0, USER,
            SECS_EPC, (1 << 64) - 4096]


# Strategies are built once: Hypothesis draws from a prebuilt strategy far faster.
ANY64 = st.integers(0, (1 << 64) - 1)
# Addresses a hostile host likes: the victim's and B's structures and pages, EPC and monitor
# memory, off by a little, non-canonical, or anything.
POINTER = st.one_of(st.sampled_from(POINTERS),
                    st.builds(lambda p, d: (p + d) % (1 << 64), st.sampled_from(POINTERS),
                              st.integers(-16, 16)),
                    ANY64)
MODE = st.sampled_from([0, 1, 2])
KIND = st.sampled_from(["random", "lifecycle", "build_b", "enter", "shared", "destroy",
                        "user_leaf"])
CODE = st.sampled_from(CODES) | ANY64
LIFECYCLE = st.sampled_from([HypercallCode.ENCLAVE_CREATE, HypercallCode.ENCLAVE_ADD_PAGE,
                             HypercallCode.ENCLAVE_INIT])
LOW_BIT = st.sampled_from([0, 1])
BUILD_B = st.sampled_from(build_b())
LEAF = st.sampled_from([ENCLU_EENTER, ENCLU_ERESUME])
TCS = st.sampled_from(TCS_LIKE) | POINTER
AEP = st.sampled_from([USER, 0, BASE + 0x1000, EPC]) | POINTER
SHARED_CODE = st.sampled_from([HypercallCode.SHARED_MEMORY_ADD, HypercallCode.SHARED_MEMORY_REMOVE,
                               HypercallCode.SHARED_MEMORY_INVALID_START,
                               HypercallCode.SHARED_MEMORY_INVALID_END])
SHARED_ARG = st.sampled_from(SHARED_RANGE_ARGS) | POINTER
DESTROY = st.sampled_from([HypercallCode.ENCLAVE_PREPARE_DESTROY,
                           HypercallCode.ENCLAVE_FINISH_DESTROY, HypercallCode.HYPERVISOR_DISABLE])
DESTROY_ARG = st.sampled_from([SECS_EPC, B_SECS_EPC, 1]) | POINTER
# user leaves the app may try outside an enclave: EEXIT, EREPORT, EGETKEY, quote...
USER_LEAF = st.sampled_from([0, 1, 4, 5, 6, 7, 8, 0xA, 0xB, 0xC, 0xD, 0x80000001, 0x8000000A,
                             0x8000000B, 0x8000000C, 0x8000000D])


@st.composite
def hostile_call(draw) -> Call:
    """One call, random or structurally valid but hostile (stateful when B's build steps, the
    entries and the destroys land in an order that means something)."""
    kind = draw(KIND)
    if kind == "random":
        return Call(draw(MODE), draw(CODE), *(draw(POINTER) for _ in range(5)))
    if kind == "lifecycle":            # create/add/init with hostile structures
        return Call(draw(st.sampled_from([0, 0, 0, 1])), draw(LIFECYCLE), draw(POINTER),
                    draw(POINTER) | draw(LOW_BIT))
    if kind == "build_b":              # the steps that build B, in whatever order comes
        return draw(BUILD_B)
    if kind == "enter":                # EENTER/ERESUME by ENCLU or hypercall
        leaf, tcs, aep = draw(LEAF), draw(TCS), draw(AEP)
        if draw(st.booleans()):
            return Call(2, leaf, draw(POINTER), draw(POINTER), draw(POINTER), tcs, aep)
        code = HypercallCode.ENCLAVE_ENTER if leaf == ENCLU_EENTER else HypercallCode.ENCLAVE_RESUME
        return Call(draw(st.sampled_from([1, 1, 0])), code, draw(POINTER), draw(POINTER),
                    draw(POINTER), tcs, aep)
    if kind == "shared":
        return Call(0, draw(SHARED_CODE), draw(SHARED_ARG), draw(POINTER))
    if kind == "destroy":
        return Call(0, draw(DESTROY), draw(DESTROY_ARG))
    leaf = draw(USER_LEAF)
    return Call(2 if leaf < 0x100 else 1, leaf, *(draw(POINTER) for _ in range(5)))


# Mostly single calls; sometimes B's whole build, so that entries, AEXs, ERESUMEs and destroys
# meet an initialized second enclave.
ONE_IN_20 = st.integers(0, 19)
HOSTILE_CALL = hostile_call()


@st.composite
def segment(draw) -> list[Call]:
    return build_b() if draw(ONE_IN_20) == 0 else [draw(HOSTILE_CALL)]


SEGMENT = segment()


def hostile_calls(max_size: int, min_size: int = 1) -> st.SearchStrategy[list[Call]]:
    """Tables of min_size..max_size segments (one call, or B's build)."""
    return st.lists(SEGMENT, min_size=min_size, max_size=max_size).map(
        lambda segments: [c for segment in segments for c in segment])
