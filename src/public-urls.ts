import type { AddressInfo } from 'node:net'
import type { Config } from './config.ts'

/** Where people reach the service: the interface it listens on, or this machine for 0.0.0.0 / ::. */
export function publicUrls(config: Pick<Config, 'demoUi'>, address: AddressInfo): { url: string; websocket: string; demo?: string } {
  const host = address.address === '0.0.0.0' || address.address === '::' ? 'localhost' : address.address
  const authority = `${host.includes(':') ? `[${host}]` : host}:${address.port}`
  return {
    url: `http://${authority}`,
    websocket: `ws://${authority}/ws/agent`,
    ...(config.demoUi ? { demo: `http://${authority}/` } : {}),
  }
}
