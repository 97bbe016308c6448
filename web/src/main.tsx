import { render } from 'solid-js/web';
import App from './App';
import { start } from './conn';
import './style.css';

start();
render(() => <App />, document.getElementById('app')!);
