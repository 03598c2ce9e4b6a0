"""Every metric of the paper: image quality (PSNR, SSIM, FID, LPIPS), lip sync and landmarks, and
lip-reading intelligibility (VTCS), each in the module named after what it measures."""

from ..exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, __file__)
