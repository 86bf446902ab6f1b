# The default model's recipe (model/default): settings for `python -m training.train`, named as its
# flags are (--kl-warmup is kl_warmup). Flags given on the command line win over these.
#
#   python -m training.train --recipe recipes/default.py --out runs/default      # this stage alone
#   scripts/reproduce_default.sh runs/default                # train -> sharpen -> fit the prior -> export
#
# Time (measured rates, benchmarks/results/gpu_vs_cpu_128px.json and model/default/model.json):
#   GPU: 400 epochs of 8,595 photos at batch 256 took 481 s on one H200 (6,930 images/s, sharing
#        the GPU with a second run); about 8 minutes.
#   CPU: about 8 hours on this project's 2-core CPU (3.4 M images at 116-123 images/s, bf16).
# The trainer prints its estimate of the time left once the first steps are timed.
#
# What it collapses: model/default was trained in three stages (experiments/README.md): this recipe
# from scratch on a GPU (where its validation PSNR peaked at epoch 200, 22.07 dB, and then fell: it
# overfitted), then two CPU fine-tunes of 3,000 s and 4,200 s with the random zoom and shift, which
# stopped the overfitting (22.36, then 22.54 dB). Here the zoom and shift are on from the start, so
# one run does what the three did.

data = "../shared/data/manifest.csv"   # every photo: the catalogue's 841, the street and showroom ones (8,595)
val_filter = ["white_background=1"]    # validated on the catalogue set's 94 validation photos

beta = 0.02          # the KL weight calibrated for this model (experiments/README.md); the trainer's default
                     # 0.1 is the value measured best from scratch at 64 px, before that calibration
kl_warmup = 0.2      # beta ramps up over the first fifth of training
batch_size = 256
lr = 1e-3            # cosine schedule to a tenth, after a 2% warm-up
epochs = 400
ema = 0.999          # the evaluated and exported weights are this moving average
zoom = 0.1           # random zoom and shift against overfitting (the trainer's defaults, stated here)
shift = 0.05
precision = "auto"   # bf16 on GPUs and on CPUs with native bf16 (this project's), fp32 elsewhere
sample_every = 10

# The other stages, for scripts/reproduce_default.sh (names in capitals: training.train leaves them).
# 2. training.sharpen: the decoder learns to draw details (L1 + EfficientNet-Lite1 perceptual distance +
#    PatchGAN, encoder frozen; experiments/README.md, "Cars that look like cars"). 5,200 steps of 16
#    photos: the committed run took 4,660 s on this project's 2-core CPU beside other work (1.1 steps/s;
#    1.4-1.6 with the machine to itself); not yet timed on a GPU. The committed model sharpened the
#    previous default (the three stages above), not a fresh run of this recipe.
SHARPEN_ARGS = ["--data", "../shared/data/manifest.csv", "--val-filter", "white_background=1", "--steps", "5200"]
# 3. The sampling distribution: a mixture of 128 Gaussians fitted on the catalogue photos' codes, so
#    /sample draws catalogue-style cars from where the photos' codes are (experiments/prior_choice.py).
PRIOR_ARGS = ["--data", "../shared/data/manifest.csv", "--filter", "white_background=1", "--components", "128"]
