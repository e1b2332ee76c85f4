# syntax=docker/dockerfile:1
# For reproducible builds pin the digest as well, e.g. node:24-slim@sha256:<digest>
# (`docker buildx imagetools inspect node:24-slim` prints it), and bump it deliberately.

FROM node:24-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev && npm cache clean --force

FROM node:24-slim
ENV NODE_ENV=production
WORKDIR /app
# No build step: Node 24 strips the TypeScript types at load time, so src/ ships as is.
COPY --from=deps --chown=node:node /app/node_modules ./node_modules
COPY --chown=node:node package.json ./
COPY --chown=node:node src ./src
COPY --chown=node:node public ./public
USER node
EXPOSE 8080
# slim has no curl; node itself probes liveness (PORT may be overridden at run time).
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||8080)+'/health/live').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
STOPSIGNAL SIGTERM
# Exec form: node is PID 1 and receives SIGTERM itself (the app drains on it). PID 1 does not
# reap orphaned children, so run with an init: `init: true` in compose, `docker run --init`.
CMD ["node", "src/server.ts"]
