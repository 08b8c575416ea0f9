"""Model configurations for the landscape demo model (small Stable-Diffusion architecture).

Only standard diffusers / transformers classes and config keys are used, so the Swift engine
(and diffusers' StableDiffusionPipeline) can load the exported folder.
"""

VOCAB_SIZE = 49408          # real CLIP BPE vocabulary (tokenizer/vocab.json)
MAX_TOKENS = 77             # CLIP context length, as in SD 1.x

TEXT_ENCODER = dict(
    vocab_size=VOCAB_SIZE,
    hidden_size=64,
    intermediate_size=256,
    projection_dim=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    max_position_embeddings=MAX_TOKENS,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    attention_dropout=0.0,
    initializer_range=0.02,
    initializer_factor=1.0,
    pad_token_id=49407,
    bos_token_id=49406,
    eos_token_id=49407,
)

UNET = dict(
    sample_size=64,                      # 64x64 latent = 512x512 pixel window
    in_channels=4,
    out_channels=4,
    center_input_sample=False,
    flip_sin_to_cos=True,
    freq_shift=0,
    # 64x64 -> 32x32 -> 16x16 -> 8x8; attention (self + cross) only at 16x16 and 8x8 (and mid).
    down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn",
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    only_cross_attention=False,
    block_out_channels=(32, 64, 96, 128),
    layers_per_block=1,
    downsample_padding=1,
    mid_block_scale_factor=1,
    act_fn="silu",
    # 8 groups (4 channels per group at 32 channels): with 32 groups the 32-channel levels would
    # be instance-normalised (1 channel per group), which removes each sample's absolute levels
    norm_num_groups=8,
    norm_eps=1e-5,
    cross_attention_dim=TEXT_ENCODER["hidden_size"],
    attention_head_dim=4,               # diffusers' legacy name: number of heads
    use_linear_projection=False,
    upcast_attention=False,
    resnet_time_scale_shift="default",
)

VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(32, 64, 96, 96),
    layers_per_block=1,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=8,                   # 4 channels per group at the 32-channel full-res level
    sample_size=512,
    scaling_factor=0.18215,              # replaced by 1/std of the trained VAE's latents
    mid_block_add_attention=False,       # no attention: cheap decode of 512x2048 on CPU
)

SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    # Zero terminal SNR (Lin et al. 2024): at t = 999 the input is pure noise, so the model must take
    # the picture's layout and colours from the prompt. With SD's schedule, x_999 keeps 7% of the
    # latents, and these smooth procedural latents stay readable through it: a UNet trained on it
    # ignored the prompt and drew the data average from pure noise. Zero SNR needs v-prediction and
    # trailing timesteps.
    rescale_betas_zero_snr=True,
    prediction_type="v_prediction",
    timestep_spacing="trailing",
)
