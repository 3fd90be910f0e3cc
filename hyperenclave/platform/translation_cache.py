"""Complete translations of one address space, kept across address-space switches.

Unicorn's TLB has no address-space tags (no PCID/VPID), so every switch between the host and
an enclave flushes it and each page the CPU touches afterwards comes back as a fill. Where the
result of a fill is known to stay valid, the fill can be a lookup here instead of a nested walk:

- an enclave's address space: only the monitor edits its page table and EPT;
- the host app's, from the moment it leaves an enclave until the host kernel next runs: only
  ring 0 can INVLPG or write CR3, and a real CPU's VPID-tagged TLB would keep the app's
  entries across the enclave visit too. Entering the kernel (`VCpu.load_segments`) drops them.

The owner must `clear()` exactly when a translation input changes: an edit of the tables (with
the INVEPT that goes with it), the end of the address space, or any full flush of the vCPU's
TLB while the cache is attached (`VCpu.flush_tlb` does that).
"""

from __future__ import annotations


class TranslationCache(dict[tuple[int, int], tuple[int, int]]):
    """(linear page number, access) -> (host-physical page, UC_PROT_* bits).

    `inputs` are the control bits the cached walks depended on besides the tables (CR0.WP,
    EFER.NXE): attaching the cache under other values empties it first.
    """

    def __init__(self) -> None:
        super().__init__()
        self.inputs: tuple[int, ...] = ()

    def attach_under(self, *inputs: int) -> "TranslationCache":
        """Return self, emptied if the walks it holds were made under other `inputs`."""
        if inputs != self.inputs:
            self.clear()
            self.inputs = inputs
        return self
