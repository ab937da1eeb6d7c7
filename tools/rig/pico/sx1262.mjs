// An SX1262 LoRa radio on the emulated Pico, wired as on Waveshare's Pico-LoRa-SX1262 HAT
// (Waveshare wiki "Pico-LoRa-SX1262", pinout): SPI1 (SCK GP10, MOSI GP11, MISO GP12), NSS GP3,
// BUSY GP2, DIO1 GP20, NRESET GP15. It answers the SPI command set micropython-lib's
// lora-sx126x driver uses, as the Semtech SX1261/2 datasheet (Rev 2.1, "DS") describes it:
//   - a command is the bytes between NSS falling and rising (DS 8.3.1); MISO returns the
//     status byte (DS 13.5.1: chip mode in bits 6:4, command status in bits 3:1) and, for
//     the read commands, their data after the opcode, address and NOP bytes (DS 13, Table 13-1);
//   - BUSY is high while a command executes (DS 8.3.1; typ. under 105 us here 20 us, 3.5 ms
//     for Calibrate, DS 13.1.12), in sleep, and through reset; NSS falling wakes the chip from
//     sleep into STDBY_RC (DS 13.1.1);
//   - IRQs (DS 13.3, Table 13-29: TxDone 0, RxDone 1, CrcErr 6, Timeout 9) are flagged when
//     unmasked in IrqMask, and DIO1 is high while a flagged IRQ is in Dio1Mask (DS 13.3.1);
//   - the 256-byte data buffer with Tx and Rx base addresses (DS 13.2.3/13.2.4, SetBufferBaseAddress,
//     WriteBuffer, ReadBuffer, GetRxBufferStatus DS 13.5.2);
//   - SetTx ends with TxDone after the packet's time on air (DS 6.1.4) and the fallback to
//     STDBY_RC (DS 13.1.4); SetRx (DS 13.1.5) with timeout 0 (single), 0xFFFFFF (continuous)
//     or n x 15.625 us (Timeout IRQ); the timer stops when the header of a packet is detected
//     (DS 13.1.7, SetStopRxTimerOnPreambleDetect false, the default): the air says when one
//     starts ({"lora_header": {header_us, end_us}}), and a packet whose header came before the
//     timeout is received to its end (a packet the air then loses ends in Timeout a second after
//     it, where the chip would flag a header or CRC error: either way the driver has no packet);
//   - GetPacketStatus (DS 13.5.3): RssiPkt = -2 x RSSI dBm, SnrPkt = 4 x SNR dB (signed),
//     SignalRssiPkt = -2 x signal RSSI dBm.
// Packets leave through the control channel ({"ev": "lora_tx"}) into the simulated air of
// tools/rig/lora_air.py, which hands packets back ({"lora_rx": {...}}) to deliver().
const NSS = 3;
const BUSY = 2;
const DIO1 = 20;
const NRESET = 15;

const MODE_SLEEP = 0; // not a status code: a sleeping chip does not answer
const STDBY_RC = 2;
const STDBY_XOSC = 3;
const FS = 4;
const RX = 5;
const TX = 6;

const IRQ_TX_DONE = 1 << 0;
const IRQ_RX_DONE = 1 << 1;
const IRQ_TIMEOUT = 1 << 9;

const BW_HZ = { 0x00: 7810, 0x08: 10420, 0x01: 15630, 0x09: 20830, 0x02: 31250, 0x0a: 41670, 0x03: 62500, 0x04: 125000, 0x05: 250000, 0x06: 500000 };

export function timeOnAirUs(len, p) {
  // DS 6.1.4, in symbols x 4 to stay in integers; symbol time in whole microseconds
  const tSym = Math.floor((1e6 * (1 << p.sf)) / p.bwHz);
  const [sO, bO] = p.sf === 5 || p.sf === 6 ? [2, -8] : [0, 0];
  const bits = Math.max(8 * len + (p.crc ? 16 : 0) - 4 * p.sf + 8 + bO + (p.implicit ? 0 : 20), 0);
  const bps = (p.sf - 2 * (p.ldro ? 1 : 0)) * 4;
  const nX4 = 17 + 4 * (p.preamble + sO + 8 + Math.ceil(bits / bps) * (p.cr + 4));
  return Math.floor((tSym * nX4) / 4);
}

export function sx1262Device(mcu, wires, send) {
  const spi = mcu.spi[1];
  const clock = mcu.clock;
  const buffer = new Uint8Array(256);
  const regs = new Uint8Array(0x1000);
  regs[0x0740] = 0x14; // LoRa sync word, private network (DS 13.4.1, Table 13-?: 0x1424)
  regs[0x0741] = 0x24;
  regs[0x0736] = 0x0d; // IQ polarity setup (DS 15.4)
  regs[0x08ac] = 0x94; // Rx gain, power saving (DS 9.6)
  regs[0x08d8] = 0xc8; // Tx clamp config (DS 15.2)
  regs[0x0889] = 0x04; // Tx modulation (DS 15.1)
  const st = {
    mode: MODE_SLEEP,
    reset: false,
    irq: 0,
    irqMask: 0,
    dio1Mask: 0,
    errors: 0,
    txBase: 0,
    rxBase: 0,
    rxLen: 0,
    rxStart: 0,
    pkt: [0, 0, 0],
    freqHz: 0,
    sf: 7,
    bw: 0x04,
    cr: 1,
    ldro: 0,
    preamble: 8,
    implicit: 0,
    payloadLen: 0,
    crc: 1,
    invertIq: 0,
    txParam: 14,
    pa: 0x0407,
    rxContinuous: false,
    selected: false,
    cmd: [],
  };
  const counters = { tx: 0, rx: 0, rx_dropped: 0, commands: 0, bad_commands: 0 };
  let busyUntil = 0;
  const busyEnd = clock.createAlarm(() => updateBusy());
  const txDone = clock.createAlarm(() => finishTx());
  const rxTimeout = clock.createAlarm(() => {
    if (st.mode !== RX) return;
    setMode(STDBY_RC);
    flag(IRQ_TIMEOUT);
  });
  let rxTimed = false; // the running receive has a timeout (single mode with one)
  let rxTail = 0; // after a header: ns from it to the packet's end
  const header = clock.createAlarm(() => {
    if (st.mode !== RX || !rxTimed) return;
    // the timer stopped: the packet's end (deliver) comes first; a Timeout only if the air lost
    // it, a second after its end (the air's wall clock and this clock drift apart under load)
    const left = rxTimeout.scheduled ? rxTimeout.nanos - clock.nanos : 0;
    rxTimeout.schedule(Math.max(left, rxTail + 1e9));
  });

  function params() {
    return {
      freq_hz: st.freqHz,
      sf: st.sf,
      bw_hz: BW_HZ[st.bw] ?? 125000,
      cr: st.cr + 4,
      preamble: st.preamble,
      crc: !!st.crc,
      implicit: !!st.implicit,
      invert_iq: !!st.invertIq,
      power_dbm: outputDbm(),
      ldro: !!st.ldro,
    };
  }

  function outputDbm() {
    // DS 13.1.14.1, Table 13-21 (SX1262): with SetTxParams at +22 dBm these PA settings give
    // +22, +20, +17, +14 dBm; lower SetTxParams values lower the output by as much
    const top = { 0x0407: 22, 0x0305: 20, 0x0203: 17, 0x0202: 14 }[st.pa] ?? 22;
    return top - (22 - Math.min(22, st.txParam));
  }

  function updateBusy() {
    const busy = st.reset || st.mode === MODE_SLEEP || clock.nanos < busyUntil;
    wires.set(BUSY, busy);
  }

  function busyFor(ns) {
    busyUntil = clock.nanos + ns;
    busyEnd.schedule(ns);
    updateBusy();
  }

  function updateDio1() {
    wires.set(DIO1, !!(st.irq & st.dio1Mask));
  }

  function flag(bits) {
    st.irq |= bits & st.irqMask; // DS 13.3.1: only unmasked IRQs are flagged
    updateDio1();
  }

  function setMode(mode) {
    const was = st.mode;
    st.mode = mode;
    if (was === RX && mode !== RX) {
      rxTimeout.cancel();
      header.cancel();
      send({ ev: 'lora_idle' });
    }
    updateBusy();
  }

  function status() {
    const mode = st.mode === MODE_SLEEP ? 0 : st.mode;
    return (mode << 4) & 0x70;
  }

  function finishTx() {
    if (st.mode !== TX) return;
    setMode(STDBY_RC);
    flag(IRQ_TX_DONE);
  }

  function startTx() {
    const p = params();
    const len = st.payloadLen;
    const payload = Buffer.alloc(len);
    for (let i = 0; i < len; i++) payload[i] = buffer[(st.txBase + i) & 0xff];
    const toa = timeOnAirUs(len, { sf: p.sf, bwHz: p.bw_hz, cr: st.cr, preamble: p.preamble, crc: p.crc, implicit: p.implicit, ldro: p.ldro });
    setMode(TX);
    counters.tx += 1;
    send({ ev: 'lora_tx', payload: payload.toString('hex'), params: p, toa_us: toa });
    txDone.schedule(toa * 1000);
  }

  function startRx(timeout) {
    setMode(RX);
    st.rxContinuous = timeout === 0xffffff;
    rxTimed = !!timeout && !st.rxContinuous;
    header.cancel();
    if (rxTimed) rxTimeout.schedule(timeout * 15625);
    send({ ev: 'lora_rx_on', params: params() });
  }

  function execute(c) {
    // a whole write command, at NSS rising (DS 8.3.1)
    const op = c[0];
    const u16 = (i) => (c[i] << 8) | c[i + 1];
    counters.commands += 1;
    switch (op) {
      case 0x80: // SetStandby(StdbyConfig)
        setMode(c[1] ? STDBY_XOSC : STDBY_RC);
        break;
      case 0x84: // SetSleep(SleepConfig)
        setMode(MODE_SLEEP);
        break;
      case 0x83: // SetTx(timeout): no Tx timeout modelled, the driver sends 0
        startTx();
        break;
      case 0x82: // SetRx(timeout, 24 bits)
        startRx((c[1] << 16) | (c[2] << 8) | c[3]);
        break;
      case 0x8a: // SetPacketType: 1 = LoRa, the only packet type modelled (the driver sets no other)
        break;
      case 0x8b: // SetModulationParams(SF, BW, CR, LowDataRateOptimize)
        st.sf = c[1];
        st.bw = c[2];
        st.cr = c[3];
        st.ldro = c[4];
        break;
      case 0x8c: // SetPacketParams(PreambleLength 16, HeaderType, PayloadLength, CRCType, InvertIQ)
        st.preamble = u16(1);
        st.implicit = c[3];
        st.payloadLen = c[4];
        st.crc = c[5];
        st.invertIq = c[6];
        break;
      case 0x86: // SetRfFrequency(RfFreq 32): f = RfFreq x 32 MHz / 2^25 (DS 13.4.1)
        st.freqHz = Math.round(((((c[1] << 24) >>> 0) + (c[2] << 16) + (c[3] << 8) + c[4]) * 32e6) / 2 ** 25);
        break;
      case 0x8e: // SetTxParams(power dBm signed, RampTime)
        st.txParam = (c[1] << 24) >> 24;
        break;
      case 0x95: // SetPaConfig(paDutyCycle, hpMax, deviceSel, paLut)
        st.pa = (c[1] << 8) | c[2];
        break;
      case 0x8f: // SetBufferBaseAddress(Tx, Rx)
        st.txBase = c[1];
        st.rxBase = c[2];
        break;
      case 0x0e: // WriteBuffer(offset, data...)
        for (let i = 2; i < c.length; i++) buffer[(c[1] + i - 2) & 0xff] = c[i];
        break;
      case 0x0d: // WriteRegister(address 16, data...)
        for (let i = 3; i < c.length; i++) regs[(u16(1) + i - 3) & 0xfff] = c[i];
        break;
      case 0x08: // SetDioIrqParams(IrqMask, DIO1Mask, DIO2Mask, DIO3Mask)
        st.irqMask = u16(1);
        st.dio1Mask = u16(3);
        updateDio1();
        break;
      case 0x02: // ClearIrqStatus(mask)
        st.irq &= ~u16(1);
        updateDio1();
        break;
      case 0x07: // ClearDeviceErrors
        st.errors = 0;
        break;
      case 0x97: // SetDIO3AsTCXOCtrl: XOSC_START_ERR is flagged as the TCXO just started (DS 13.3.6)
        st.errors |= 0x20;
        break;
      case 0x89: // Calibrate(param): BUSY for 3.5 ms (DS 13.1.12)
        busyFor(3.5e6);
        return;
      case 0x98: // CalibrateImage(freq1, freq2)
        busyFor(3.5e6);
        return;
      case 0x9d: // SetDIO2AsRfSwitchCtrl
      case 0x12: // GetIrqStatus
      case 0x13: // GetRxBufferStatus
      case 0x14: // GetPacketStatus
      case 0x17: // GetDeviceErrors
      case 0x1d: // ReadRegister
      case 0x1e: // ReadBuffer
      case 0xc0: // GetStatus
        break;
      default:
        counters.bad_commands += 1;
    }
    busyFor(20e3);
  }

  function answer(c, i) {
    // the byte on MISO while byte i of command c goes out (DS 13, Table 13-1 and 13.5)
    const s = status();
    switch (c[0]) {
      case 0x12: // GetIrqStatus: status, IrqStatus 15:8, 7:0
        return [s, s, st.irq >> 8, st.irq & 0xff][i] ?? 0;
      case 0x17: // GetDeviceErrors: status, OpError 15:8, 7:0
        return [s, s, st.errors >> 8, st.errors & 0xff][i] ?? 0;
      case 0x13: // GetRxBufferStatus: status, PayloadLengthRx, RxStartBufferPointer
        return [s, s, st.rxLen, st.rxStart][i] ?? 0;
      case 0x14: // GetPacketStatus: status, RssiPkt, SnrPkt, SignalRssiPkt
        return [s, s, st.pkt[0], st.pkt[1], st.pkt[2]][i] ?? 0;
      case 0x1d: // ReadRegister(address 16, NOP): data from byte 4
        return i < 4 ? s : regs[(((c[1] << 8) | c[2]) + i - 4) & 0xfff];
      case 0x1e: // ReadBuffer(offset, NOP): data from byte 3
        return i < 3 ? s : buffer[(c[1] + i - 3) & 0xff];
      default:
        return s;
    }
  }

  // Each byte takes 8 SPI clocks before its answer is in the RX FIFO, as on the wire: a byte
  // completed at once (rp2040js's default) lets a DMA transfer (MicroPython's machine.SPI uses
  // DMA from 32 bytes, ports/rp2/machine_spi.c) overrun the 8-entry RX FIFO, and the transfer
  // then never ends.
  let miso = 0xff;
  const byteDone = clock.createAlarm(() => spi.completeTransmit(miso));
  spi.onTransmit = (value) => {
    if (!st.selected || st.reset || st.mode === MODE_SLEEP) {
      miso = 0xff; // nobody drives MISO: the pull-up reads 1s
    } else {
      const c = st.cmd;
      c.push(value & 0xff);
      miso = answer(c, c.length - 1);
    }
    const hz = spi.clockFrequency || 1e6;
    byteDone.schedule(Math.max(1, Math.round(8e9 / hz)));
  };

  const nss = mcu.gpio[NSS];
  let nssWas = true;
  nss.addListener(() => {
    const high = nss.outputEnable ? nss.outputValue : true;
    if (high === nssWas) return;
    nssWas = high;
    if (!high) {
      st.selected = true;
      st.cmd = [];
      if (st.mode === MODE_SLEEP && !st.reset) {
        st.mode = STDBY_RC; // NSS falling wakes the chip (DS 13.1.1)
        busyFor(300e3);
      }
    } else {
      st.selected = false;
      if (st.cmd.length) execute(st.cmd);
      st.cmd = [];
    }
  });

  const nreset = mcu.gpio[NRESET];
  nreset.addListener(() => {
    const low = nreset.outputEnable && !nreset.outputValue;
    if (low && !st.reset) {
      st.reset = true;
      setMode(STDBY_RC);
      st.irq = st.irqMask = st.dio1Mask = st.errors = 0;
      txDone.cancel();
      updateBusy();
      updateDio1();
    } else if (!low && st.reset) {
      st.reset = false;
      st.mode = STDBY_RC;
      busyFor(3.5e6); // calibration after power-up / reset (DS 9.1: about 3.5 ms)
    }
  });

  updateBusy();
  updateDio1();

  return {
    counters,
    heard(h) {
      // a packet starts on the air for this radio: its header is here after header_us
      if (st.mode !== RX) return;
      rxTail = (h.end_us - h.header_us) * 1000;
      header.schedule(h.header_us * 1000);
    },
    deliver(pkt) {
      // a packet that reached this radio in the air: only a radio in RX takes it (DS 13.1.5)
      const data = Buffer.from(pkt.payload, 'hex');
      if (st.mode !== RX || data.length > 255) {
        counters.rx_dropped += 1;
        return;
      }
      for (let i = 0; i < data.length; i++) buffer[(st.rxBase + i) & 0xff] = data[i];
      st.rxLen = data.length;
      st.rxStart = st.rxBase;
      const clamp = (v) => Math.max(0, Math.min(255, Math.round(v)));
      st.pkt = [clamp(-2 * pkt.rssi_dbm), Math.max(-128, Math.min(127, Math.round(4 * pkt.snr_db))) & 0xff, clamp(-2 * pkt.signal_rssi_dbm)];
      counters.rx += 1;
      if (!st.rxContinuous) setMode(STDBY_RC);
      flag(IRQ_RX_DONE);
    },
  };
}
