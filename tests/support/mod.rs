pub mod real_llama;
