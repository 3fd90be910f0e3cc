"""The SDK's sample enclaves (`sdk/samples/<name>/`: enclave.c, enclave.json, app.c, edge
header), built, signed and ready for a machine's initramfs.

    bundles = sample_bundles()        # {"/enclaves/hello.bin": bytes, ...}
    programs = sample_programs()      # {"hello_app": [app.c], ...}: default_boot_images builds them

They are signed with the SDK's sample key, generated once (RSA-3072, e = 3) and cached at
`<cache root>/sdk/sample-signing-key.pem`; the key is for samples and tests only.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from hyperenclave.guest.build import default_cache_root
from hyperenclave.vmm.sigstruct import generate_signing_key, load_signing_key, save_signing_key

from .build import build_enclave
from .image import EnclaveConfig, layout_from_elf
from .signer import SignedEnclave, sign

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
#: sample -> the name of its host program in /bin
SAMPLES = {"hello": "hello_app", "secret_keeper": "secret_keeper_app",
           "spinner": "spinner_app", "faulter": "fault_app", "sealer": "sealer_app"}


def sample_key_path() -> Path:
    return default_cache_root().parent / "sdk" / "sample-signing-key.pem"


def sample_key() -> rsa.RSAPrivateKey:
    """The cached sample signing key (made on first use; concurrent first uses agree)."""
    path = sample_key_path()
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".key-", dir=path.parent)
        os.close(fd)
        save_signing_key(generate_signing_key(), Path(tmp))
        try:
            os.link(tmp, path)                  # the first writer wins; the others read it
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    return load_signing_key(path)


def sign_sample(name: str, key: rsa.RSAPrivateKey | None = None) -> SignedEnclave:
    """Build sample `name` from its C sources and sign it with its enclave.json."""
    if name not in SAMPLES:
        raise ValueError(f"no sample enclave {name!r} (there are: {', '.join(SAMPLES)})")
    directory = SAMPLES_DIR / name
    elf = build_enclave([directory / "enclave.c"])
    layout = layout_from_elf(elf.read_bytes(), EnclaveConfig.load(directory / "enclave.json"))
    return sign(layout, key or sample_key())


@functools.cache
def sample_bundles() -> dict[str, bytes]:
    """Every sample signed with the sample key, at its initramfs path /enclaves/<name>.bin."""
    key = sample_key()
    return {f"/enclaves/{name}.bin": sign_sample(name, key).to_bytes() for name in SAMPLES}


def sample_programs() -> dict[str, list[Path]]:
    """The samples' host programs, as `default_boot_images(extra_programs=...)` takes them."""
    return {app: [SAMPLES_DIR / name / "app.c"] for name, app in SAMPLES.items()}
