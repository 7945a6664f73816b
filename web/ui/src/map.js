// The device map: Leaflet with no tile server (the hub may be offline). Positions are drawn on
// a plain background with a graticule of latitude and longitude lines, so the map works anywhere.
import L from 'leaflet';
import 'leaflet/dist/leaflet.css';

export const statusColors = {
  online: '#16a34a',
  active: '#16a34a',
  offline: '#dc2626',
  unknown: '#94a3b8',
};

function niceStep(span) {
  for (const s of [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30]) if (span / s <= 8) return s;
  return 30;
}

// DeviceMap shows devices with a location as circles coloured by status.
export class DeviceMap {
  constructor(el, { onSelect } = {}) {
    this.el = el;
    this.onSelect = onSelect;
    this.map = L.map(el, {
      attributionControl: false,
      zoomSnap: 0.5,
      minZoom: 1,
      maxZoom: 18,
      worldCopyJump: false,
      maxBounds: [[-90, -200], [90, 200]],
    });
    // The graticule lies under the devices: a pane below the overlay pane (z-index 400).
    this.map.createPane('grid').style.zIndex = 250;
    this.grid = L.layerGroup().addTo(this.map);
    this.layer = L.featureGroup().addTo(this.map);
    this.markers = new Map();
    this.fitted = false;
    this.map.setView([20, 0], 1.5);
    this.map.on('moveend zoomend', () => this.drawGrid());
    this.drawGrid();
    this.ro = new ResizeObserver(() => this.map.invalidateSize());
    this.ro.observe(el);
  }

  drawGrid() {
    this.grid.clearLayers();
    const b = this.map.getBounds();
    const south = Math.max(-85, b.getSouth()), north = Math.min(85, b.getNorth());
    const west = Math.max(-180, b.getWest()), east = Math.min(180, b.getEast());
    const step = niceStep(Math.max(north - south, (east - west) / 2));
    const style = { color: '#cbd5e1', weight: 1, interactive: false, pane: 'grid' };
    const label = (latlng, text, cls) =>
      L.marker(latlng, { interactive: false, pane: 'grid', icon: L.divIcon({ className: `grid-label ${cls}`, html: text, iconSize: null }) });
    const digits = step < 0.1 ? 2 : step < 1 ? 1 : 0;
    for (let lat = Math.ceil(south / step) * step; lat <= north; lat += step) {
      L.polyline([[lat, west], [lat, east]], style).addTo(this.grid);
      label([lat, east], `${Math.abs(lat).toFixed(digits)}°${lat >= 0 ? 'N' : 'S'}`, 'lat').addTo(this.grid);
    }
    for (let lon = Math.ceil(west / step) * step; lon <= east; lon += step) {
      L.polyline([[south, lon], [north, lon]], style).addTo(this.grid);
      label([south, lon], `${Math.abs(lon).toFixed(digits)}°${lon >= 0 ? 'E' : 'W'}`, 'lon').addTo(this.grid);
    }
  }

  // update shows devices (objects with id, name, location) coloured by statusOf(device).
  update(devices, statusOf) {
    const seen = new Set();
    for (const d of devices) {
      if (!d.location || typeof d.location.lat !== 'number') continue;
      seen.add(d.id);
      const color = statusColors[statusOf(d)] || statusColors.unknown;
      let m = this.markers.get(d.id);
      if (!m) {
        m = L.circleMarker([d.location.lat, d.location.lon], {
          radius: 9, color: '#ffffff', weight: 2.5, fillColor: color, fillOpacity: 0.95, className: 'device-marker',
        });
        m.bindTooltip(d.name || d.id, { direction: 'right', offset: [10, 0], permanent: devices.length <= 25, className: 'device-label' });
        m.on('click', () => this.onSelect && this.onSelect(d.id));
        m.addTo(this.layer);
        m.getElement().setAttribute('data-device', d.id);
        this.markers.set(d.id, m);
      } else {
        m.setLatLng([d.location.lat, d.location.lon]);
        m.setStyle({ fillColor: color });
      }
      m.getElement().setAttribute('data-status', statusOf(d));
    }
    for (const [id, m] of this.markers) {
      if (!seen.has(id)) {
        m.remove();
        this.markers.delete(id);
      }
    }
    if (!this.fitted && this.markers.size) {
      this.fitted = true;
      this.fit();
    }
  }

  fit() {
    if (!this.markers.size) return;
    this.map.fitBounds(this.layer.getBounds(), { paddingTopLeft: [70, 50], paddingBottomRight: [150, 50], maxZoom: 13 });
  }

  destroy() {
    this.ro.disconnect();
    this.map.remove();
  }
}
