import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    reporters: ['default'],
    // The JS backend is the slow path and the async tests run ~1 s calls on purpose.
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Child processes, not threads: each file gets its own addon load, worker pool and warning state.
    pool: 'forks',
  },
});
