import { defineConfig } from "vite";
import { svelte } from "@sveltejs/vite-plugin-svelte";
import { resolve } from "node:path";

// `--mode mock` builds the same UI with the Tauri IPC mocked (src/mock),
// for the browser tests; the app embeds the normal build from dist/.
export default defineConfig(({ mode }) => ({
  plugins: [svelte()],
  clearScreen: false,
  build: {
    target: "es2021",
    rollupOptions: {
      input: resolve(import.meta.dirname, mode === "mock" ? "mock.html" : "index.html"),
    },
  },
  test: {
    include: ["tests/unit/**/*.test.ts"],
  },
}));
