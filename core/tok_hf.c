/* tok_hf.c - a Hugging Face tokenizer.json (the `tokenizers` library's
 * serialisation) into a tok_t:
 *   model        BPE (vocab, merges as "a b" or [a, b], byte_fallback,
 *                fuse_unk, unk_token, ignore_merges) or Unigram (vocab
 *                [[piece, score]], unk_id, byte_fallback)
 *   normalizer   Sequence of Prepend, Replace (String pattern), Lowercase
 *                (one-code-point mappings of the alphabetic scripts), Strip,
 *                NFC (composition of a starter and the marks right after
 *                it, and Hangul: tok_unicode.c)
 *   pre_tokenizer Sequence of Metaspace (replacement, prepend_scheme or the
 *                older add_prefix_space, split), ByteLevel (add_prefix_space,
 *                use_regex: the GPT-2 split), Split with the GPT-2, Llama 3 or
 *                Qwen2 regex (recognised by its text, run by hand)
 *   post_processor TemplateProcessing: a leading SpecialToken is the bos
 *   decoder      Replace U+2581 -> " ", ByteFallback, Fuse, Strip, ByteLevel,
 *                Metaspace
 *   added_tokens matched in the text before the model; special ones decode
 *                to nothing.
 * Anything else is refused (LK_ERR_UNSUPPORTED) naming the file and the
 * part, rather than tokenising differently from the reference. */
#include "tok_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char tok_re_gpt2[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char tok_re_llama3[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                                    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char tok_re_qwen2[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
                                   "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

int tok__regex_kind(const char *re) {
  if (!re) return 0;
  if (!strcmp(re, tok_re_gpt2)) return TOK_SPLIT_GPT2;
  if (!strcmp(re, tok_re_llama3)) return TOK_SPLIT_LLAMA3;
  if (!strcmp(re, tok_re_qwen2)) return TOK_SPLIT_QWEN2;
  return 0;
}

static int hf_bool(const json_t *o, const char *k, int dflt) {
  const json_t *v = json_object_get(o, k);
  return json_is_boolean(v) ? json_is_true(v) : dflt;
}

static int hf_copy(char *dst, size_t cap, const char *s) {
  if (!s || strlen(s) >= cap) return -1;
  strcpy(dst, s);
  return 0;
}

static int hf_normalizer(tok_t *t, const json_t *n, const char *path, char *err, size_t errlen) {
  if (!n || json_is_null(n)) return 0;
  const char *type = json_string_value(json_object_get(n, "type"));
  if (type && !strcmp(type, "Sequence")) {
    size_t i;
    const json_t *x;
    json_array_foreach(json_object_get(n, "normalizers"), i, x) if (hf_normalizer(t, x, path, err, errlen)) return -1;
    return 0;
  }
  if (t->n_norm == (int)(sizeof t->norm / sizeof *t->norm)) {
    tok__err(err, errlen, "%s: normalizer: too many steps (not supported)", path);
    return -1;
  }
  tok_norm *q = &t->norm[t->n_norm];
  memset(q, 0, sizeof *q);
  int bad = 0;
  if (!type) bad = 1;
  else if (!strcmp(type, "Prepend")) {
    q->op = TOK_N_PREPEND;
    bad = hf_copy(q->a, sizeof q->a, json_string_value(json_object_get(n, "prepend")));
  } else if (!strcmp(type, "Replace")) {
    q->op = TOK_N_REPLACE;
    bad = hf_copy(q->a, sizeof q->a, json_string_value(json_object_get(json_object_get(n, "pattern"), "String"))) ||
          hf_copy(q->b, sizeof q->b, json_string_value(json_object_get(n, "content")));
  } else if (!strcmp(type, "Lowercase")) q->op = TOK_N_LOWER;
  else if (!strcmp(type, "Strip")) {
    q->op = TOK_N_STRIP;
    q->a[0] = (char)hf_bool(n, "left", 1);
    q->b[0] = (char)hf_bool(n, "right", 1);
  } else if (!strcmp(type, "NFC")) q->op = TOK_N_NFC;
  else bad = 1;
  if (bad) {
    tok__err(err, errlen, "%s: normalizer %s is not supported", path, type ? type : "(no type)");
    return -1;
  }
  t->n_norm++;
  return 0;
}

static int hf_pre(tok_t *t, const json_t *n, const char *path, char *err, size_t errlen) {
  if (!n || json_is_null(n)) return 0;
  const char *type = json_string_value(json_object_get(n, "type"));
  if (type && !strcmp(type, "Sequence")) {
    size_t i;
    const json_t *x;
    json_array_foreach(json_object_get(n, "pretokenizers"), i, x) if (hf_pre(t, x, path, err, errlen)) return -1;
    return 0;
  }
  if (t->n_pre == (int)(sizeof t->pre / sizeof *t->pre)) {
    tok__err(err, errlen, "%s: pre_tokenizer: too many steps (not supported)", path);
    return -1;
  }
  tok_pre *q = &t->pre[t->n_pre];
  memset(q, 0, sizeof *q);
  int bad = 0;
  if (!type) bad = 1;
  else if (!strcmp(type, "Metaspace")) {
    q->op = TOK_P_METASPACE;
    const char *r = json_string_value(json_object_get(n, "replacement"));
    bad = hf_copy(q->repl, sizeof q->repl, r ? r : "\xE2\x96\x81");
    const char *ps = json_string_value(json_object_get(n, "prepend_scheme"));
    q->prepend = ps ? (!strcmp(ps, "first") ? TOK_PREP_FIRST : !strcmp(ps, "never") ? TOK_PREP_NEVER : TOK_PREP_ALWAYS)
                    : (hf_bool(n, "add_prefix_space", 1) ? TOK_PREP_ALWAYS : TOK_PREP_NEVER);
    q->split = hf_bool(n, "split", 1);
  } else if (!strcmp(type, "ByteLevel")) {
    q->op = TOK_P_BYTELEVEL;
    q->prepend = hf_bool(n, "add_prefix_space", 1);
    q->split = hf_bool(n, "use_regex", 1);
  } else if (!strcmp(type, "Split")) {
    q->op = TOK_P_SPLIT;
    const json_t *pat = json_object_get(n, "pattern");
    const char *beh = json_string_value(json_object_get(n, "behavior"));
    q->regex = tok__regex_kind(json_string_value(json_object_get(pat, "Regex")));
    if (!q->regex || hf_bool(n, "invert", 0) || (beh && strcmp(beh, "Isolated"))) {
      tok__err(err, errlen,
               "%s: pre_tokenizer Split with this pattern/behavior is not supported (the GPT-2, Llama 3 and Qwen2 "
               "regexes with behavior Isolated are)",
               path);
      return -1;
    }
  } else bad = 1;
  if (bad) {
    tok__err(err, errlen, "%s: pre_tokenizer %s is not supported", path, type ? type : "(no type)");
    return -1;
  }
  t->n_pre++;
  return 0;
}

static int hf_decoder(tok_t *t, const json_t *n, const char *path, char *err, size_t errlen) {
  if (!n || json_is_null(n)) return 0;
  const char *type = json_string_value(json_object_get(n, "type"));
  if (!type) type = "(no type)";
  if (!strcmp(type, "Sequence")) {
    size_t i;
    const json_t *x;
    json_array_foreach(json_object_get(n, "decoders"), i, x) if (hf_decoder(t, x, path, err, errlen)) return -1;
  } else if (!strcmp(type, "Replace")) {
    const char *a = json_string_value(json_object_get(json_object_get(n, "pattern"), "String"));
    const char *b = json_string_value(json_object_get(n, "content"));
    if (!a || !b || strcmp(a, "\xE2\x96\x81") || strcmp(b, " ")) {
      tok__err(err, errlen, "%s: decoder Replace other than U+2581 -> \" \" is not supported", path);
      return -1;
    }
    t->dec_space = 1;
  } else if (!strcmp(type, "Strip")) {
    const json_t *st = json_object_get(n, "start");
    if (json_integer_value(st) > 1 || json_integer_value(json_object_get(n, "stop")) != 0) {
      tok__err(err, errlen, "%s: decoder Strip other than start 1 / stop 0 is not supported", path);
      return -1;
    }
    t->dec_strip1 = json_integer_value(st) == 1;
  } else if (!strcmp(type, "ByteLevel")) t->dec_bytelevel = 1;
  else if (!strcmp(type, "Metaspace")) {
    t->dec_space = 1;
    const char *ps = json_string_value(json_object_get(n, "prepend_scheme"));
    t->dec_strip1 = ps ? strcmp(ps, "never") != 0 : hf_bool(n, "add_prefix_space", 1);
  } else if (strcmp(type, "ByteFallback") && strcmp(type, "Fuse")) {
    tok__err(err, errlen, "%s: decoder %s is not supported", path, type);
    return -1;
  }
  return 0;
}

/* the bos of a TemplateProcessing (its single template's leading SpecialToken) */
static void hf_post(tok_t *t, const json_t *n) {
  if (!n || json_is_null(n)) return;
  const char *type = json_string_value(json_object_get(n, "type"));
  if (!type) return;
  if (!strcmp(type, "Sequence")) {
    size_t i;
    const json_t *x;
    json_array_foreach(json_object_get(n, "processors"), i, x) hf_post(t, x);
    return;
  }
  if (strcmp(type, "TemplateProcessing")) return;
  const json_t *first = json_array_get(json_object_get(n, "single"), 0);
  const char *name = json_string_value(json_object_get(json_object_get(first, "SpecialToken"), "id"));
  if (!name) return;
  const json_t *ids = json_object_get(json_object_get(json_object_get(n, "special_tokens"), name), "ids");
  if (json_array_size(ids) == 1) {
    t->bos = (int32_t)json_integer_value(json_array_get(ids, 0));
    t->add_bos = 1;
  }
}

static int32_t hf_token_id(const tok_t *t, const json_t *v) {
  if (json_is_object(v)) v = json_object_get(v, "content");
  const char *s = json_string_value(v);
  return s ? tok__find(t, s, strlen(s)) : -1;
}

/* bos/eos names from tokenizer_config.json beside the file, else the
 * usual names among the added tokens. */
static void hf_special_ids(tok_t *t, const char *path) {
  char cfg[4096];
  snprintf(cfg, sizeof cfg, "%s", path);
  char *slash = strrchr(cfg, '/');
  snprintf(slash ? slash + 1 : cfg, sizeof cfg - (size_t)(slash ? slash + 1 - cfg : 0), "tokenizer_config.json");
  json_t *c = json_load_file(cfg, 0, NULL);
  if (c) {
    int32_t b = hf_token_id(t, json_object_get(c, "bos_token")), e = hf_token_id(t, json_object_get(c, "eos_token"));
    if (t->bos < 0 && b >= 0) t->bos = b;
    if (e >= 0) t->eos = e;
    json_decref(c);
  }
  static const char *const bos[] = {"<s>", "<|begin_of_text|>", "<bos>"};
  static const char *const eos[] = {"</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>"};
  for (size_t i = 0; i < 3 && t->bos < 0; i++) t->bos = tok__find(t, bos[i], strlen(bos[i]));
  for (size_t i = 0; i < 4 && t->eos < 0; i++) t->eos = tok__find(t, eos[i], strlen(eos[i]));
}

static int hf_fail(char *err, size_t errlen, const char *path, const char *what) {
  tok__err(err, errlen, "%s: %s", path, what);
  return -1;
}

int tok__load_hf(tok_t *t, const char *path, char *err, size_t errlen) {
  json_error_t je;
  json_t *j = json_load_file(path, 0, &je);
  if (!j) {
    tok__err(err, errlen, "%s: not valid JSON (line %d: %s)", path, je.line, je.text);
    return -1;
  }
  int rc = -1;
  const json_t *m = json_object_get(j, "model");
  const char *type = json_string_value(json_object_get(m, "type"));
  const json_t *vocab = json_object_get(m, "vocab"), *added = json_object_get(j, "added_tokens");
  if (!json_is_object(j) || !m) {
    hf_fail(err, errlen, path, "not a tokenizer.json (no \"model\")");
    goto out;
  }
  if (!type || (strcmp(type, "BPE") && strcmp(type, "Unigram"))) {
    tok__err(err, errlen, "%s: model type %s is not supported (BPE and Unigram are)", path,
             type ? type : "(missing)");
    goto out;
  }
  int uni = !strcmp(type, "Unigram");
  if (uni ? !json_is_array(vocab) : !json_is_object(vocab)) {
    hf_fail(err, errlen, path, uni ? "Unigram model without a vocab array" : "BPE model without a vocab object");
    goto out;
  }
  if (!uni) {
    const char *csp = json_string_value(json_object_get(m, "continuing_subword_prefix"));
    const char *ews = json_string_value(json_object_get(m, "end_of_word_suffix"));
    if ((csp && *csp) || (ews && *ews)) {
      hf_fail(err, errlen, path, "BPE continuing_subword_prefix / end_of_word_suffix is not supported");
      goto out;
    }
  }
  /* the vocabulary size covers the model's ids and the added tokens' */
  int64_t n = uni ? (int64_t)json_array_size(vocab) : 0;
  const char *key;
  const json_t *v;
  if (!uni)
    json_object_foreach((json_t *)vocab, key, v) {
      if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX / 2) {
        tok__err(err, errlen, "%s: vocab entry \"%s\" has a bad id", path, key);
        goto out;
      }
      if (json_integer_value(v) + 1 > n) n = json_integer_value(v) + 1;
    }
  size_t i;
  json_array_foreach(added, i, v) {
    json_int_t id = json_integer_value(json_object_get(v, "id"));
    if (!json_string_value(json_object_get(v, "content")) || id < 0 || id > INT32_MAX / 2) {
      tok__err(err, errlen, "%s: added_tokens[%zu] is malformed", path, i);
      goto out;
    }
    if (id + 1 > n) n = id + 1;
  }
  /* ids leave no large holes (a hostile id would make a huge table) */
  size_t entries = (uni ? 0 : json_object_size(vocab)) + json_array_size(vocab) + json_array_size(added);
  if ((uint64_t)n > 2 * (uint64_t)entries + 256) {
    tok__err(err, errlen, "%s: ids up to %lld for %zu vocabulary and added entries (ids must be about contiguous)",
             path, (long long)n - 1, entries);
    goto out;
  }
  if (!n || tok__alloc(t, (int32_t)n)) {
    hf_fail(err, errlen, path, n ? "out of memory" : "empty vocabulary");
    goto out;
  }
  if (uni) {
    json_array_foreach(vocab, i, v) {
      const char *s = json_string_value(json_array_get(v, 0));
      if (!s || !json_is_number(json_array_get(v, 1))) {
        tok__err(err, errlen, "%s: vocab[%zu] is not [piece, score]", path, i);
        goto out;
      }
      tok__set(t, (int32_t)i, s, json_string_length(json_array_get(v, 0)),
               (float)json_number_value(json_array_get(v, 1)), TOK_T_NORMAL);
    }
  } else
    json_object_foreach((json_t *)vocab, key, v) tok__set(t, (int32_t)json_integer_value(v), key, strlen(key), 0,
                                                          TOK_T_NORMAL);
  json_array_foreach(added, i, v) {
    const json_t *c = json_object_get(v, "content");
    int32_t id = (int32_t)json_integer_value(json_object_get(v, "id"));
    int special = hf_bool(v, "special", 0);
    if (!t->piece[id] || special)
      tok__set(t, id, json_string_value(c), json_string_length(c), 0, special ? TOK_T_CONTROL : TOK_T_USER);
    if (tok__added_add(t, json_string_value(c), json_string_length(c), id, special)) {
      hf_fail(err, errlen, path, "out of memory");
      goto out;
    }
  }
  for (int32_t k = 0; k < t->n; k++)
    if (!t->piece[k]) tok__set(t, k, "", 0, 0, TOK_T_UNUSED); /* a hole in the ids */
  t->model = uni ? TOK_M_UNIGRAM : TOK_M_BPE_RANK;
  t->byte_fallback = hf_bool(m, "byte_fallback", 0);
  t->fuse_unk = uni ? 1 : hf_bool(m, "fuse_unk", 0);
  t->ignore_merges = hf_bool(m, "ignore_merges", 0);
  if (tok__index(t)) {
    hf_fail(err, errlen, path, "out of memory");
    goto out;
  }
  if (uni) {
    const json_t *u = json_object_get(m, "unk_id");
    t->unk = json_is_integer(u) && json_integer_value(u) < t->n ? (int32_t)json_integer_value(u) : -1;
    if (t->unk >= 0) t->type[t->unk] = TOK_T_UNK;
  } else {
    t->unk = hf_token_id(t, json_object_get(m, "unk_token"));
    const json_t *merges = json_object_get(m, "merges");
    json_array_foreach(merges, i, v) {
      const char *a, *b;
      size_t la, lb;
      if (json_is_array(v)) {
        a = json_string_value(json_array_get(v, 0)), b = json_string_value(json_array_get(v, 1));
        la = a ? json_string_length(json_array_get(v, 0)) : 0, lb = b ? json_string_length(json_array_get(v, 1)) : 0;
      } else {
        const char *s = json_string_value(v), *sp = s ? strchr(s, ' ') : NULL;
        a = s, b = sp ? sp + 1 : NULL;
        la = sp ? (size_t)(sp - s) : 0, lb = b ? strlen(b) : 0;
      }
      if (!a || !b) {
        tok__err(err, errlen, "%s: merges[%zu] is not \"a b\" or [a, b]", path, i);
        goto out;
      }
      int r = tok__merge_add(t, tok__find(t, a, la), tok__find(t, b, lb), (int32_t)i);
      if (r < 0) {
        hf_fail(err, errlen, path, "out of memory");
        goto out;
      }
      /* r > 0: a merge whose parts or result are not in the vocabulary is
       * never applicable; HF refuses such files, lorakit skips the rule */
    }
  }
  if (hf_normalizer(t, json_object_get(j, "normalizer"), path, err, errlen) ||
      hf_pre(t, json_object_get(j, "pre_tokenizer"), path, err, errlen) ||
      hf_decoder(t, json_object_get(j, "decoder"), path, err, errlen))
    goto out;
  hf_post(t, json_object_get(j, "post_processor"));
  hf_special_ids(t, path);
  rc = 0;
out:
  json_decref(j);
  return rc;
}
