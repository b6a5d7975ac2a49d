"""PyTorch side of the data-path benchmark: the LightlyTrain stack's view pipeline (PIL decode +
torchvision transforms in a torch DataLoader) on the same JPEG files lt-embed cached, the same view
size and the same mixup. One mixed sample = two images opened and decoded, two views transformed,
one mix, as in our loader. Nothing trains behind it.

Transforms (docs/architecture.md §1): RandomResizedCrop(224, scale=(0.14, 1)), RandomHorizontalFlip,
RandomApply([ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8), RandomGrayscale(0.2), GaussianBlur with
kernel 3 and sigma in (1e-6, 0.1) (torchvision refuses sigma 0; at these sigmas the kernel is ~ an
identity, as ours), ToTensor, Normalize(ImageNet); then x = lam * a + (1 - lam) * b, lam ~ U(0, 1).

    torch_data.py LIST SAMPLES REPEATS WORKERS [SIZE]
LIST: a text file with one image path a line. Prints {"samples": S, "workers": W, "times": [...]}:
one warm-up pass over SAMPLES samples, then REPEATS timed passes (persistent workers).
"""
import json
import random
import sys
import time

import torch
from PIL import Image
import torchvision.transforms as T


def view_transform(size=224):
    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.14, 1.0)),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
        T.RandomGrayscale(0.2),
        T.GaussianBlur(3, sigma=(1e-6, 0.1)),
        T.ToTensor(),
        T.Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    ])


class MixedViews(torch.utils.data.Dataset):
    """Sample i: image i mod N mixed with a random other image, as lt's cache samples."""

    def __init__(self, paths, n, size=224):
        self.paths, self.n, self.tf = paths, n, view_transform(size)

    def __len__(self):
        return self.n

    def load(self, i):
        with Image.open(self.paths[i]) as im:
            return self.tf(im.convert("RGB"))

    def __getitem__(self, i):
        a = i % len(self.paths)
        b = random.randrange(len(self.paths) - 1)
        b += b >= a
        lam = random.random()
        return lam * self.load(a) + (1 - lam) * self.load(b)


def main():
    paths = [l.strip() for l in open(sys.argv[1]) if l.strip()]
    S, R, W = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    size = int(sys.argv[5]) if len(sys.argv) > 5 else 224
    torch.set_num_threads(1)
    dl = torch.utils.data.DataLoader(MixedViews(paths, S, size), batch_size=16, num_workers=W,
                                     persistent_workers=True, prefetch_factor=2)
    times = []
    for it in range(R + 1):
        t0 = time.perf_counter()
        for _ in dl:
            pass
        if it > 0:
            times.append(time.perf_counter() - t0)
    print(json.dumps({"samples": S, "workers": W, "times": times}))


if __name__ == "__main__":
    main()
