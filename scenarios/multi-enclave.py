"""Several enclaves and their apps at once (hello, secret keeper, spinner, twice each), each with
its own ELRANGE, EPC pages and marshalling buffer; all EPC is free again when they are done."""

from __future__ import annotations

import re

from hyperenclave.scenario import ScenarioContext

APPS = ["/bin/hello_app 2 40", "/bin/secret_keeper_app sesame sesame wrong",
        "/bin/spinner_app 3000000"]


def run(ctx: ScenarioContext) -> None:
    s = ctx.start(rc=["/bin/sysctl -w dev.hyper_enclave.enabled=1"])
    for app in APPS * 2:
        s.sh(f"{app} &")
    s.sh("wait", timeout=120)
    text = s.serial()
    statuses = re.findall(r"/bin/(\w+_app)\[\d+\] exited with status (\d+)", text)
    ctx.check("six apps ran their enclaves at the same time and exited with status 0",
              len(statuses) == 6 and all(code == "0" for _, code in statuses), str(statuses))
    ctx.check("hello: ECALL add(2, 40) = 42, twice", text.count("ECALL add(2, 40) = 42") == 2)
    ctx.check("secret keeper: the right guess is right and the wrong one wrong, twice",
              text.count('guess "sesame": right') == 2 and text.count('guess "wrong": wrong') == 2)
    ctx.check("spinner: equal to the uninterrupted loop, twice", text.count(": equal") == 2)
    bases = set(re.findall(r"ELRANGE \[(0x[0-9a-f]+)-", text))
    ctx.check("the secret keepers had distinct ELRANGEs", len(bases) == 2, str(bases))
    epc = s.monitor.enclaves.epcm.summary()
    ctx.check("every EPC page is free afterwards", epc["valid"] == 0, str(epc))
    ctx.note(f"enclaves alive now: {len(s.monitor.enclaves.enclaves)}; EPCM {epc}")
