// Reference runner for checking Cleave's LLM engine against llama.cpp (never a
// dependency of Cleave). For each prompt (one per line of PROMPTS), it tokenizes
// with llama.cpp (special-token texts parsed), evaluates the prompt, writes the first-token logits as raw
// float32 to OUT/logits-N.f32 and generates up to N_TOKENS tokens greedily
// (argmax, lowest id on ties; an end-of-generation token stops). Prints one JSON line per prompt: prompt ids and generated ids.
//
// Build: see bench/llama_reference/build.sh.
#include "llama.h"

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

static int argmax(const float * logits, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) {
        if (logits[i] > logits[best]) best = i;
    }
    return best;
}

// Prompts are one per line; the two characters backslash-n stand for a newline.
static std::string unescape(const std::string & line) {
    std::string text;
    for (size_t i = 0; i < line.size(); i++) {
        if (line[i] == '\\' && i + 1 < line.size() && line[i + 1] == 'n') {
            text += '\n';
            i++;
        } else {
            text += line[i];
        }
    }
    return text;
}

static void print_ids(const std::vector<llama_token> & ids) {
    printf("[");
    for (size_t i = 0; i < ids.size(); i++) printf(i ? ",%d" : "%d", ids[i]);
    printf("]");
}

int main(int argc, char ** argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s MODEL PROMPTS N_TOKENS OUT_DIR [THREADS] [FLASH_ATTN auto|on|off]\n", argv[0]);
        return 2;
    }
    const int n_tokens = std::stoi(argv[3]);
    const std::string out_dir = argv[4];
    const int threads = argc > 5 ? std::stoi(argv[5]) : 2;
    const std::string flash = argc > 6 ? argv[6] : "auto";

    llama_log_set([](ggml_log_level, const char *, void *) {}, nullptr);
    llama_backend_init();
    llama_model * model = llama_model_load_from_file(argv[1], llama_model_default_params());
    if (!model) {
        fprintf(stderr, "cannot load %s\n", argv[1]);
        return 1;
    }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);

    std::ifstream prompts(argv[2]);
    std::string prompt;
    int index = 0;
    while (std::getline(prompts, prompt)) {
        prompt = unescape(prompt);
        llama_context_params cparams = llama_context_default_params();
        cparams.n_ctx = 1024;
        cparams.n_batch = 1024;
        cparams.n_threads = threads;
        cparams.n_threads_batch = threads;
        cparams.flash_attn_type = flash == "on"    ? LLAMA_FLASH_ATTN_TYPE_ENABLED
                                  : flash == "off" ? LLAMA_FLASH_ATTN_TYPE_DISABLED
                                                   : LLAMA_FLASH_ATTN_TYPE_AUTO;
        llama_context * ctx = llama_init_from_model(model, cparams);

        std::vector<llama_token> ids(prompt.size() + 8);
        int n = llama_tokenize(vocab, prompt.c_str(), (int) prompt.size(), ids.data(), (int) ids.size(), true, true);
        ids.resize(n);

        std::vector<llama_token> generated;
        llama_batch batch = llama_batch_get_one(ids.data(), (int) ids.size());
        for (int step = 0; step < n_tokens; step++) {
            if (llama_decode(ctx, batch) != 0) {
                fprintf(stderr, "decode failed\n");
                return 1;
            }
            const float * logits = llama_get_logits_ith(ctx, -1);
            if (step == 0) {
                std::ofstream out(out_dir + "/logits-" + std::to_string(index) + ".f32", std::ios::binary);
                out.write(reinterpret_cast<const char *>(logits), sizeof(float) * n_vocab);
            }
            llama_token next = argmax(logits, n_vocab);
            if (llama_vocab_is_eog(vocab, next)) break;
            generated.push_back(next);
            batch = llama_batch_get_one(&generated.back(), 1);
        }
        printf("{\"prompt\":");
        print_ids(ids);
        printf(",\"generated\":");
        print_ids(generated);
        printf("}\n");
        fflush(stdout);
        llama_free(ctx);
        index++;
    }
    llama_model_free(model);
    return 0;
}
