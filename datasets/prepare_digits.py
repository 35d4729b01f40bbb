"""Generate the built-in digits detection set (no download): see datasets/README.md.

python datasets/prepare_digits.py [--root DIR] [--num-train N] [--num-val N] [--force]
"""

from luminet_det.data.digits import main

if __name__ == "__main__":
    main()
