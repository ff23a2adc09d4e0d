"""The FID Inception's weights from the command line (needs torch, once, on a machine with internet).

    python -m vqgan_jax.inception download --out ~/.cache/vqgan_jax/inception_fid.npz
    python -m vqgan_jax.inception convert --pth pt_inception-2015-12-05-6726825d.pth --out FILE.npz

The work is done by `vqgan_jax.interop.inception_weights`; this module is only its command line.
"""
import sys

if __name__ == "__main__":
    from vqgan_jax.cli import run_cli
    from vqgan_jax.interop.inception_weights import main
    sys.exit(run_cli(main))
