/* test_llm_train.h - the LoRA trainer's cases of test_llm.c. */
static void llm_train_tcases(Suite *s) { (void)s; }
