from diffprobe.models.registry import get_spec
from diffprobe.models.tokenizer import load_clip_tokenizer


def test_prompt_tokenizes_to_real_clip_ids():
    tok = load_clip_tokenizer(get_spec("sd15").config("tokenizer"))
    # ids of the OpenAI CLIP tokenizer for this prompt
    assert tok("a photo of an astronaut riding a horse").input_ids == [
        49406, 320, 1125, 539, 550, 18376, 6765, 320, 4558, 49407]


def test_pad_token_follows_each_model():
    sd15 = load_clip_tokenizer(get_spec("sd15").config("tokenizer"))
    sd21 = load_clip_tokenizer(get_spec("sd21").config("tokenizer"))
    assert sd15("hi", padding="max_length", max_length=5).input_ids == [49406, 1883, 49407, 49407, 49407]
    assert sd21("hi", padding="max_length", max_length=5).input_ids == [49406, 1883, 49407, 0, 0]  # "!" is id 0


def test_long_prompt_truncates_to_77():
    tok = load_clip_tokenizer(get_spec("sd15").config("tokenizer"))
    ids = tok("word " * 200, truncation=True, max_length=tok.model_max_length).input_ids
    assert len(ids) == 77 and ids[0] == 49406 and ids[-1] == 49407


def test_vocabulary_is_complete():
    tok = load_clip_tokenizer()
    assert len(tok) == 49408
