"""Build tiny random-weight models with real configs and trained tokenizers, saved with `save_pretrained`.

They load through the same `from_pretrained` path as real weights, so tests and the offline demo
run the real library code in seconds with no download.
"""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "Write a short product description for a handmade ceramic mug.",
    "Our spring sale starts today: twenty percent off every order over fifty euros.",
    "Explain photosynthesis to a ten year old in three sentences.",
    "The quick brown fox jumps over the lazy dog.",
    "A friendly reply to a customer whose parcel arrived late.",
    "Five catchy slogans for a neighbourhood bakery.",
] * 4

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _bpe_tokenizer_json(vocab_size: int, special: list[str], end_of_word_suffix: str | None = None):  # noqa: ANN202
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    suffix = {"end_of_word_suffix": end_of_word_suffix} if end_of_word_suffix else {}
    tok = Tokenizer(models.BPE(unk_token="<unk>", **suffix))
    tok.pre_tokenizer = (
        pre_tokenizers.ByteLevel(add_prefix_space=False)
        if end_of_word_suffix is None
        else (pre_tokenizers.Whitespace())
    )
    tok.decoder = decoders.ByteLevel() if end_of_word_suffix is None else decoders.BPEDecoder(suffix=end_of_word_suffix)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet() if end_of_word_suffix is None else [],
        show_progress=False,
        **suffix,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return tok


def build_tiny_text_model(path: str | Path, *, chat_template: bool = True) -> Path:
    """A 2-layer Llama with a BPE tokenizer trained on a few sentences."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = Path(path)
    if (path / "config.json").exists():
        return path
    path.mkdir(parents=True, exist_ok=True)
    special = ["<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_bpe_tokenizer_json(400, special),
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="</s>",
    )
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = None  # random weights: let max_new_tokens decide the length
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _clip_tokenizer(vocab_size: int):  # noqa: ANN202
    """A CLIPTokenizer whose vocab and merges come from a byte-level BPE trained with CLIP's `</w>` suffix."""
    import json

    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    special = ["<|startoftext|>", "<|endoftext|>"]
    tok = Tokenizer(models.BPE(unk_token="<|endoftext|>", end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    state = json.loads(tok.to_str())["model"]
    vocab = dict(state["vocab"])
    for char in pre_tokenizers.ByteLevel.alphabet():  # every byte must also exist as a word end
        vocab.setdefault(char + "</w>", len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in state["merges"]]
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def build_tiny_image_model(path: str | Path) -> Path:
    """A Stable Diffusion pipeline with the dummy component sizes of diffusers' own tests (64x64 in ~0.2 s)."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    path = Path(path)
    if (path / "model_index.json").exists():
        return path
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = _clip_tokenizer(600)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=2,
    )
    # Four blocks give the real 8x VAE scale factor: with two, a 512 px image meant a 256x256 latent and a
    # minute of attention on the CPU; now it is the 64x64 latent a real model works on.
    vae = AutoencoderKL(
        block_out_channels=(4, 4, 8, 8),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        norm_num_groups=2,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="trailing",
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(path)
    return path


SPEECH_CHARACTERS = list(" abcdefghijklmnopqrstuvwxyz'.,!?-")


def build_tiny_speech_model(path: str | Path, *, num_speakers: int = 1) -> Path:
    """A 2-layer VITS text-to-speech model with a character VitsTokenizer (no phonemizer) at 16 kHz."""
    import json

    import torch
    from transformers import VitsConfig, VitsModel, VitsTokenizer

    path = Path(path)
    if (path / "config.json").exists():
        return path
    path.mkdir(parents=True, exist_ok=True)
    vocab = {"<pad>": 0, "<unk>": 1} | {char: i + 2 for i, char in enumerate(SPEECH_CHARACTERS)}
    (path / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    tokenizer = VitsTokenizer(path / "vocab.json", phonemize=False, normalize=True, add_blank=True)
    torch.manual_seed(0)
    config = VitsConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        ffn_dim=32,
        flow_size=16,
        spectrogram_bins=16,
        prior_encoder_num_flows=2,
        prior_encoder_num_wavenet_layers=1,
        posterior_encoder_num_wavenet_layers=1,
        duration_predictor_num_flows=2,
        duration_predictor_filter_channels=16,
        upsample_initial_channel=16,
        upsample_rates=[4, 4],
        upsample_kernel_sizes=[8, 8],
        resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1, 3]],
        num_speakers=num_speakers,
        speaker_embedding_size=8 if num_speakers > 1 else 0,
        sampling_rate=16000,
        pad_token_id=0,
    )
    VitsModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _tiny_clip_text_encoder(tokenizer):  # noqa: ANN001, ANN202
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )


def build_tiny_upscaler_x4(path: str | Path) -> Path:
    """A StableDiffusionUpscalePipeline (the x4 upscaler's layout: 7-channel UNet, 4x VAE) with tiny random weights."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        DDPMScheduler,
        StableDiffusionUpscalePipeline,
        UNet2DConditionModel,
    )

    path = Path(path)
    if (path / "model_index.json").exists():
        return path
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = _clip_tokenizer(600)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 8, 16),
        layers_per_block=1,
        sample_size=32,
        in_channels=7,  # noisy latents + the low-resolution image
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        use_linear_projection=True,
        num_class_embeds=400,  # the noise level is a class label, up to max_noise_level
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        block_out_channels=(4, 4, 8),  # three blocks: a 4x VAE, as in the real x4 upscaler
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        latent_channels=4,
        norm_num_groups=2,
        scaling_factor=0.08333,
    )
    pipe = StableDiffusionUpscalePipeline(
        vae=vae,
        text_encoder=_tiny_clip_text_encoder(tokenizer),
        tokenizer=tokenizer,
        unet=unet,
        low_res_scheduler=DDPMScheduler(),
        scheduler=DDIMScheduler(prediction_type="v_prediction"),
        max_noise_level=350,
    )
    pipe.save_pretrained(path)
    return path


def build_tiny_upscaler_x2(path: str | Path) -> Path:
    """A StableDiffusionLatentUpscalePipeline (the x2 latent upscaler's layout) with tiny random weights."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionLatentUpscalePipeline,
        UNet2DConditionModel,
    )

    path = Path(path)
    if (path / "model_index.json").exists():
        return path
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = _clip_tokenizer(600)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=32,
        in_channels=8,  # noisy latents + the image's latents
        out_channels=5,  # the real model also predicts a variance channel, which the pipeline drops
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        time_cond_proj_dim=128 + 32,  # noise-level embedding + the pooled text embedding
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        block_out_channels=(4, 4, 8, 8),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        norm_num_groups=2,
    )
    scheduler = EulerDiscreteScheduler(prediction_type="sample")
    pipe = StableDiffusionLatentUpscalePipeline(
        vae=vae, text_encoder=_tiny_clip_text_encoder(tokenizer), tokenizer=tokenizer, unet=unet, scheduler=scheduler
    )
    pipe.save_pretrained(path)
    return path


WHISPER_LANGUAGES = ["en", "de", "fr", "es"]


def build_tiny_whisper_model(path: str | Path) -> Path:
    """A 1+1-layer Whisper (80 mel bins, 30 s windows) with a byte-level BPE and Whisper's special tokens."""
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizerFast,
    )

    path = Path(path)
    if (path / "config.json").exists():
        return path
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = WhisperTokenizerFast(
        tokenizer_object=_bpe_tokenizer_json(300, ["<|endoftext|>"]),
        unk_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    languages = [f"<|{code}|>" for code in WHISPER_LANGUAGES]
    control = ["<|startoftranscript|>", *languages, "<|translate|>", "<|transcribe|>", "<|startoflm|>"]
    control += ["<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]
    timestamps = [f"<|{i * 0.02:.2f}|>" for i in range(1501)]  # 0.00 … 30.00 s, right after <|notimestamps|>
    tokenizer.add_special_tokens({"additional_special_tokens": control})
    tokenizer.add_tokens(timestamps)
    ids = tokenizer.convert_tokens_to_ids
    processor = WhisperProcessor(
        feature_extractor=WhisperFeatureExtractor(feature_size=80, sampling_rate=16000), tokenizer=tokenizer
    )
    torch.manual_seed(0)
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=80,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_source_positions=1500,
        max_target_positions=448,
        decoder_start_token_id=ids("<|startoftranscript|>"),
        bos_token_id=ids("<|endoftext|>"),
        eos_token_id=ids("<|endoftext|>"),
        pad_token_id=ids("<|endoftext|>"),
        begin_suppress_tokens=[],
        suppress_tokens=[],
    )
    model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids("<|startoftranscript|>"),
        eos_token_id=ids("<|endoftext|>"),
        pad_token_id=ids("<|endoftext|>"),
        bos_token_id=ids("<|endoftext|>"),
        no_timestamps_token_id=ids("<|notimestamps|>"),
        prev_sot_token_id=ids("<|startofprev|>"),
        is_multilingual=True,
        lang_to_id={token: ids(token) for token in languages},
        task_to_id={"transcribe": ids("<|transcribe|>"), "translate": ids("<|translate|>")},
        max_initial_timestamp_index=50,
        max_length=448,
        begin_suppress_tokens=[],
        # As in the real checkpoints: control tokens never appear inside the transcript.
        suppress_tokens=[ids(token) for token in control if token != "<|notimestamps|>"],
    )
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
